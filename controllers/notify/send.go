package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// DefaultTimeout bounds one delivery attempt.
const DefaultTimeout = 10 * time.Second

// Sender posts one message to one sink, once; the Notifier retries.
type Sender struct {
	// Client posts; nil means NewHTTPClient(DefaultTimeout).
	Client *http.Client
	// Now is the clock for signatures; nil means time.Now.
	Now func() time.Time
}

// NewHTTPClient is an HTTP client for sinks: the environment's proxy
// settings, a timeout per attempt, and no redirects (a webhook that
// redirects is misconfigured, and following it would carry the payload
// somewhere nobody configured).
func NewHTTPClient(timeout time.Duration) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	return &http.Client{
		Transport: t,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// DeliveryError says why a sink did not take a message. Its text never
// holds the sink's URL, token or signing secret.
type DeliveryError struct {
	// Status is the HTTP status, 0 when the sink was not reached.
	Status int
	// Retryable is true for failures that may pass: unreachable sinks,
	// 5xx, 429, 408, and the chat services' "too fast" answers.
	Retryable bool
	msg       string
}

func (e *DeliveryError) Error() string { return e.msg }

// Retryable reports whether err is worth another attempt.
func Retryable(err error) bool {
	if de, ok := errors.AsType[*DeliveryError](err); ok {
		return de.Retryable
	}
	return true
}

// Send renders m for s and posts it once.
func (s *Sender) Send(ctx context.Context, sink Sink, m *Message) error {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	req, err := Render(sink, m, now())
	if err != nil {
		return &DeliveryError{msg: redact(err.Error(), sink)}
	}
	return s.post(ctx, sink, req)
}

func (s *Sender) post(ctx context.Context, sink Sink, r *Request) error {
	u, err := url.Parse(r.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return &DeliveryError{msg: "the sink URL is not an absolute http(s) URL"}
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, r.URL, bytes.NewReader(r.Body))
	if err != nil {
		return &DeliveryError{msg: "building the request: " + redact(err.Error(), sink)}
	}
	hreq.Header = r.Header.Clone()
	c := s.Client
	if c == nil {
		c = NewHTTPClient(DefaultTimeout)
	}
	resp, err := c.Do(hreq)
	if err != nil {
		// A *url.Error quotes the URL; only its cause is kept.
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err
		}
		return &DeliveryError{Retryable: true, msg: "POST failed: " + redact(err.Error(), sink)}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		retry := resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout
		return &DeliveryError{Status: resp.StatusCode, Retryable: retry,
			msg: fmt.Sprintf("the sink answered %s%s", resp.Status, snippet(body, sink))}
	}
	return checkAnswer(sink, resp.StatusCode, body)
}

// checkAnswer reads the answers of the chat services that say 200 and
// refuse in the body.
func checkAnswer(sink Sink, status int, body []byte) error {
	switch sink.Type {
	case coredogv1.NotificationDingTalk, coredogv1.NotificationWeCom:
		var a struct {
			ErrCode *int   `json:"errcode"`
			ErrMsg  string `json:"errmsg"`
		}
		if json.Unmarshal(body, &a) != nil || a.ErrCode == nil || *a.ErrCode == 0 {
			return nil
		}
		// -1: system busy; 130101 (DingTalk) and 45009 (WeCom): sent too fast.
		retry := *a.ErrCode == -1 || *a.ErrCode == 130101 || *a.ErrCode == 45009
		return &DeliveryError{Status: status, Retryable: retry,
			msg: fmt.Sprintf("the sink refused the message: errcode %d: %s", *a.ErrCode, redact(clean(a.ErrMsg, 200), sink))}
	case coredogv1.NotificationLark:
		var a struct {
			Code *int   `json:"code"`
			Msg  string `json:"msg"`
		}
		if json.Unmarshal(body, &a) != nil || a.Code == nil || *a.Code == 0 {
			return nil
		}
		// 9499 and 11232: rate limited.
		retry := *a.Code == 9499 || *a.Code == 11232
		return &DeliveryError{Status: status, Retryable: retry,
			msg: fmt.Sprintf("the sink refused the message: code %d: %s", *a.Code, redact(clean(a.Msg, 200), sink))}
	}
	return nil
}

func snippet(body []byte, sink Sink) string {
	s := clean(string(body), 200)
	if s == "" {
		return ""
	}
	return ": " + redact(s, sink)
}

// redact removes the sink's secrets, and the parts of its URL that carry
// tokens, from a text that may have quoted them.
func redact(s string, sink Sink) string {
	var secrets []string
	add := func(v string, min int) {
		if len(v) >= min {
			secrets = append(secrets, v, url.QueryEscape(v), url.PathEscape(v))
		}
	}
	add(sink.URL, 1)
	add(sink.Token, 1)
	add(sink.SigningSecret, 1)
	if u, err := url.Parse(sink.URL); err == nil {
		add(u.RawQuery, 1)
		add(strings.TrimPrefix(u.EscapedPath(), "/"), 1)
		// Tokens are long; words such as "services" or "send" may stay.
		for _, vs := range u.Query() {
			for _, v := range vs {
				add(v, 9)
			}
		}
		for seg := range strings.SplitSeq(u.Path, "/") {
			add(seg, 9)
		}
		if u.User != nil {
			add(u.User.String(), 1)
		}
	}
	// Longest first, so that a secret containing another goes whole.
	for i := range secrets {
		for j := i + 1; j < len(secrets); j++ {
			if len(secrets[j]) > len(secrets[i]) {
				secrets[i], secrets[j] = secrets[j], secrets[i]
			}
		}
	}
	for _, v := range secrets {
		s = strings.ReplaceAll(s, v, "[redacted]")
	}
	return s
}
