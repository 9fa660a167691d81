package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/url"
	"strconv"
	"time"
)

// DingTalkSign is a DingTalk custom robot's signature: HMAC-SHA256, keyed
// with the secret, of "<timestamp>\n<secret>", Base64-encoded. The timestamp
// is in milliseconds and must be within an hour of DingTalk's clock. The
// caller URL-encodes it into the sign query parameter.
func DingTalkSign(secret string, timestampMillis int64) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(strconv.FormatInt(timestampMillis, 10) + "\n" + secret))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// LarkSign is a Lark (Feishu) custom bot's signature: HMAC-SHA256, keyed
// with "<timestamp>\n<secret>", of nothing, Base64-encoded. The timestamp is
// in seconds and travels with the signature in the request body.
func LarkSign(secret string, timestampSeconds int64) string {
	mac := hmac.New(sha256.New, []byte(strconv.FormatInt(timestampSeconds, 10)+"\n"+secret))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// dingTalkSignURL adds the timestamp and sign query parameters to a robot URL.
func dingTalkSignURL(raw, secret string, now time.Time) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// The parse error would quote the URL, and with it the token.
		return "", errors.New("the DingTalk URL does not parse")
	}
	ts := now.UnixMilli()
	q := u.Query()
	q.Set("timestamp", strconv.FormatInt(ts, 10))
	q.Set("sign", DingTalkSign(secret, ts))
	u.RawQuery = q.Encode()
	return u.String(), nil
}
