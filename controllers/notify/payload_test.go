package notify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

var (
	testNow     = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	testExpires = testNow.Add(24 * time.Hour)
)

const testLink = "https://cores.s3.amazonaws.com/prod/shop/web-0/x.zst?X-Amz-Signature=abc&X-Amz-Expires=86400"

func testMessage() *Message {
	return &Message{
		Event: EventUploaded, Cluster: "prod-eu", Policy: "default",
		CoreDump: "core-5f0c9e", CoreDumpNamespace: "coredog-system", UID: "0b5e6f7a-uid",
		Namespace: "shop", Pod: "web-0", Container: "app", Image: "registry.example/web:1", Workload: "StatefulSet/web",
		Node: "node-1", Executable: "server", Signal: "SIGSEGV", SignalNumber: 11,
		Signature: "0123456789ab", Occurrences: 3, CrashedAt: testNow.Add(-time.Minute), Size: 41 << 20,
		Reason: "Uploaded", Detail: "Stored at s3://cores/prod/shop/web-0/x.zst",
		Location: "s3://cores/prod/shop/web-0/x.zst", Link: testLink, LinkExpires: testExpires,
	}
}

// capture is an httptest server that keeps what it was sent.
type capture struct {
	mu   sync.Mutex
	reqs []captured
	srv  *httptest.Server
	// answer writes the response; nil answers 200 {}.
	answer func(w http.ResponseWriter, n int)
}

type captured struct {
	header http.Header
	query  url.Values
	path   string
	body   []byte
}

func newCapture(t *testing.T, answer func(w http.ResponseWriter, n int)) *capture {
	c := &capture{answer: answer}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		c.mu.Lock()
		c.reqs = append(c.reqs, captured{header: r.Header.Clone(), query: r.URL.Query(), path: r.URL.Path, body: b})
		n := len(c.reqs)
		c.mu.Unlock()
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		if c.answer != nil {
			c.answer(w, n)
			return
		}
		_, _ = io.WriteString(w, "{}")
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *capture) requests() []captured {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]captured(nil), c.reqs...)
}

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, b)
	}
	return m
}

// path walks decoded JSON: strings are object keys, ints array indexes.
func path(t *testing.T, v any, steps ...any) any {
	t.Helper()
	for _, s := range steps {
		switch k := s.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("%v: not an object at %q", steps, k)
			}
			v = m[k]
		case int:
			a, ok := v.([]any)
			if !ok || k >= len(a) {
				t.Fatalf("%v: no element %d", steps, k)
			}
			v = a[k]
		}
	}
	return v
}

func str(t *testing.T, v any, steps ...any) string {
	t.Helper()
	s, _ := path(t, v, steps...).(string)
	return s
}

func TestPayloads(t *testing.T) {
	const secret = "SECthis-is-a-test-secret"
	cases := []struct {
		name  string
		sink  Sink
		query string
		check func(t *testing.T, r captured)
	}{
		{
			name: "webhook", sink: Sink{Type: coredogv1.NotificationWebhook, Token: "tok-123"},
			check: func(t *testing.T, r captured) {
				if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
					t.Errorf("Content-Type %q", ct)
				}
				if a := r.header.Get("Authorization"); a != "Bearer tok-123" {
					t.Errorf("Authorization %q", a)
				}
				d := decode(t, r.body)
				want := map[string]string{
					"type": TypeUploaded, "event": "Uploaded", "cluster": "prod-eu", "policy": "default",
					"namespace": "shop", "pod": "web-0", "container": "app", "workload": "StatefulSet/web",
					"executable": "server", "signal": "SIGSEGV", "node": "node-1", "signature": "0123456789ab",
					"downloadURL": testLink, "downloadURLExpiresAt": testExpires.Format(time.RFC3339),
					"location": "s3://cores/prod/shop/web-0/x.zst",
				}
				for k, v := range want {
					if got := str(t, d, k); got != v {
						t.Errorf("%s = %q, want %q", k, got, v)
					}
				}
				if got := path(t, d, "occurrences"); got != float64(3) {
					t.Errorf("occurrences = %v", got)
				}
				if got := str(t, d, "coreDump", "uid"); got != "0b5e6f7a-uid" {
					t.Errorf("coreDump.uid = %q", got)
				}
				if !strings.Contains(str(t, d, "summary"), "server killed by SIGSEGV in shop/web-0") {
					t.Errorf("summary %q", str(t, d, "summary"))
				}
			},
		},
		{
			name: "cloudevents", sink: Sink{Type: coredogv1.NotificationCloudEvents},
			check: func(t *testing.T, r captured) {
				if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/cloudevents+json") {
					t.Errorf("Content-Type %q", ct)
				}
				if r.header.Get("Authorization") != "" {
					t.Error("no token configured, yet an Authorization header was sent")
				}
				e := decode(t, r.body)
				want := map[string]string{
					"specversion": "1.0", "type": "io.coredog.coredump.uploaded", "id": "0b5e6f7a-uid",
					"source": "/coredog/clusters/prod-eu/coredumppolicies/default", "subject": "core-5f0c9e",
					"datacontenttype": "application/json",
				}
				for k, v := range want {
					if got := str(t, e, k); got != v {
						t.Errorf("%s = %q, want %q", k, got, v)
					}
				}
				if _, err := time.Parse(time.RFC3339, str(t, e, "time")); err != nil {
					t.Errorf("time: %v", err)
				}
				if got := str(t, e, "data", "pod"); got != "web-0" {
					t.Errorf("data.pod = %q", got)
				}
				if got := str(t, e, "data", "downloadURL"); got != testLink {
					t.Errorf("data.downloadURL = %q", got)
				}
			},
		},
		{
			name: "slack", sink: Sink{Type: coredogv1.NotificationSlack},
			check: func(t *testing.T, r captured) {
				d := decode(t, r.body)
				if text := str(t, d, "text"); !strings.Contains(text, "server killed by SIGSEGV") || !strings.Contains(text, testLink) {
					t.Errorf("text %q", text)
				}
				if got := str(t, d, "blocks", 0, "type"); got != "header" {
					t.Errorf("first block %q", got)
				}
				fields, _ := path(t, d, "blocks", 1, "fields").([]any)
				var all []string
				for i := range fields {
					all = append(all, str(t, fields, i, "text"))
				}
				joined := strings.Join(all, "|")
				for _, want := range []string{"*Pod*\nweb-0", "*Signal*\nSIGSEGV (11)", "*Signature*\n0123456789ab (3 occurrences)", "*Cluster*\nprod-eu"} {
					if !strings.Contains(joined, want) {
						t.Errorf("fields lack %q: %s", want, joined)
					}
				}
				if len(fields) > 10 {
					t.Errorf("%d fields; Slack takes 10", len(fields))
				}
				if link := str(t, d, "blocks", 2, "text", "text"); !strings.Contains(link, "<"+testLink+"|Download") {
					t.Errorf("link block %q", link)
				}
			},
		},
		{
			name: "teams", sink: Sink{Type: coredogv1.NotificationTeams},
			check: func(t *testing.T, r captured) {
				d := decode(t, r.body)
				if str(t, d, "type") != "message" || str(t, d, "attachments", 0, "contentType") != "application/vnd.microsoft.card.adaptive" {
					t.Errorf("not a message with an Adaptive Card: %s", r.body)
				}
				card := path(t, d, "attachments", 0, "content")
				if str(t, card, "type") != "AdaptiveCard" || str(t, card, "version") == "" {
					t.Errorf("card %v", card)
				}
				if str(t, card, "actions", 0, "type") != "Action.OpenUrl" || str(t, card, "actions", 0, "url") != testLink {
					t.Errorf("actions %v", path(t, card, "actions"))
				}
				if str(t, card, "body", 1, "type") != "FactSet" {
					t.Errorf("second body element is not a FactSet")
				}
			},
		},
		{
			name: "wecom", sink: Sink{Type: coredogv1.NotificationWeCom},
			check: func(t *testing.T, r captured) {
				d := decode(t, r.body)
				if str(t, d, "msgtype") != "markdown" {
					t.Errorf("msgtype %q", str(t, d, "msgtype"))
				}
				c := str(t, d, "markdown", "content")
				for _, want := range []string{"**Core dump: server killed by SIGSEGV in shop/web-0**", "- **Pod**: web-0", "[Download the core dump](" + testLink + ")"} {
					if !strings.Contains(c, want) {
						t.Errorf("content lacks %q:\n%s", want, c)
					}
				}
			},
		},
		{
			name: "dingtalk", sink: Sink{Type: coredogv1.NotificationDingTalk},
			check: func(t *testing.T, r captured) {
				d := decode(t, r.body)
				if str(t, d, "msgtype") != "markdown" || str(t, d, "markdown", "title") == "" {
					t.Errorf("body %s", r.body)
				}
				if text := str(t, d, "markdown", "text"); !strings.HasPrefix(text, "#### Core dump:") || !strings.Contains(text, testLink) {
					t.Errorf("text %q", text)
				}
				if r.query.Has("sign") || r.query.Has("timestamp") {
					t.Error("signed without a signing secret")
				}
			},
		},
		{
			name: "dingtalk signed", sink: Sink{Type: coredogv1.NotificationDingTalk, SigningSecret: secret}, query: "?access_token=tok-123",
			check: func(t *testing.T, r captured) {
				if r.query.Get("access_token") != "tok-123" {
					t.Errorf("access_token lost: %v", r.query)
				}
				ts := r.query.Get("timestamp")
				if ts != strconv.FormatInt(testNow.UnixMilli(), 10) {
					t.Errorf("timestamp %q, want milliseconds", ts)
				}
				// As DingTalk's documentation defines it: HmacSHA256 keyed with the
				// secret over timestamp+"\n"+secret, then Base64.
				mac := hmac.New(sha256.New, []byte(secret))
				mac.Write([]byte(ts + "\n" + secret))
				if want := base64.StdEncoding.EncodeToString(mac.Sum(nil)); r.query.Get("sign") != want {
					t.Errorf("sign %q, want %q", r.query.Get("sign"), want)
				}
			},
		},
		{
			name: "lark", sink: Sink{Type: coredogv1.NotificationLark},
			check: func(t *testing.T, r captured) {
				d := decode(t, r.body)
				if str(t, d, "msg_type") != "text" || !strings.Contains(str(t, d, "content", "text"), "Pod: web-0") {
					t.Errorf("body %s", r.body)
				}
				if _, ok := d["sign"]; ok {
					t.Error("signed without a signing secret")
				}
			},
		},
		{
			name: "lark signed", sink: Sink{Type: coredogv1.NotificationLark, SigningSecret: secret},
			check: func(t *testing.T, r captured) {
				d := decode(t, r.body)
				ts := str(t, d, "timestamp")
				if ts != strconv.FormatInt(testNow.Unix(), 10) {
					t.Errorf("timestamp %q, want seconds", ts)
				}
				// As Lark's documentation defines it: HmacSHA256 keyed with
				// timestamp+"\n"+secret over empty data, then Base64.
				mac := hmac.New(sha256.New, []byte(ts+"\n"+secret))
				if want := base64.StdEncoding.EncodeToString(mac.Sum(nil)); str(t, d, "sign") != want {
					t.Errorf("sign %q, want %q", str(t, d, "sign"), want)
				}
				if !strings.Contains(str(t, d, "content", "text"), testLink) {
					t.Errorf("no link in %s", r.body)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCapture(t, nil)
			tc.sink.Name = "s"
			tc.sink.URL = c.srv.URL + "/hook" + tc.query
			s := &Sender{Client: c.srv.Client(), Now: func() time.Time { return testNow }}
			if err := s.Send(context.Background(), tc.sink, testMessage()); err != nil {
				t.Fatal(err)
			}
			reqs := c.requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests, want 1", len(reqs))
			}
			if ua := reqs[0].header.Get("User-Agent"); ua != userAgent {
				t.Errorf("User-Agent %q", ua)
			}
			tc.check(t, reqs[0])
		})
	}
}

// The signatures against fixed vectors computed with the Python samples of
// the DingTalk and Lark documentation.
func TestSignatureVectors(t *testing.T) {
	const secret = "SECthis-is-a-test-secret"
	if got, want := DingTalkSign(secret, 1577836800000), "YRiQFrpdHuhmGFexkDuSGcqNP715QCGBHodQUbf5IuI="; got != want {
		t.Errorf("DingTalkSign = %q, want %q", got, want)
	}
	if got, want := LarkSign(secret, 1577836800), "Q7iszgob4r2uTnJqfQ5pjs1Rb0L5IME+SMthGWCNWuQ="; got != want {
		t.Errorf("LarkSign = %q, want %q", got, want)
	}
	u, err := dingTalkSignURL("https://oapi.dingtalk.com/robot/send?access_token=abc", secret, time.UnixMilli(1577836800000))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(u, "sign=YRiQFrpdHuhmGFexkDuSGcqNP715QCGBHodQUbf5IuI%3D") || !strings.Contains(u, "timestamp=1577836800000") || !strings.Contains(u, "access_token=abc") {
		t.Errorf("signed URL %s", u)
	}
}

func TestMessageVariants(t *testing.T) {
	hostile := "evil](http://phish.example)<b>\n# heading" + strings.Repeat("x", 5000)
	cases := []struct {
		name   string
		mutate func(m *Message)
		sink   coredogv1.NotificationSinkType
		check  func(t *testing.T, body []byte)
	}{
		{"file storage gets the location", func(m *Message) { m.Link, m.LinkExpires = "file:///var/lib/coredog/store/x.zst", time.Time{} },
			coredogv1.NotificationSlack, func(t *testing.T, b []byte) {
				d := decode(t, b)
				if link := str(t, d, "blocks", 2, "text", "text"); link != "Stored at `file:///var/lib/coredog/store/x.zst`" {
					t.Errorf("link block %q", link)
				}
			}},
		{"failed dumps say why", func(m *Message) {
			m.Event, m.Reason, m.Detail, m.Link, m.Location = EventFailed, "UploadFailed", "Upload failed 15 times, giving up: timeout", "", ""
		}, coredogv1.NotificationWebhook, func(t *testing.T, b []byte) {
			d := decode(t, b)
			if str(t, d, "type") != TypeFailed || str(t, d, "message") == "" || str(t, d, "downloadURL") != "" {
				t.Errorf("body %s", b)
			}
		}},
		{"throttled windows carry their count", func(m *Message) {
			m.Event, m.Link, m.Location = EventThrottled, "", ""
			m.Throttled = &ThrottleSummary{Count: 7, Since: testNow.Add(-time.Hour), Until: testNow, Limit: 5, Window: time.Hour}
		}, coredogv1.NotificationCloudEvents, func(t *testing.T, b []byte) {
			e := decode(t, b)
			if str(t, e, "type") != TypeThrottled || path(t, e, "data", "throttled", "count") != float64(7) || str(t, e, "data", "throttled", "rateLimit", "window") != "1h0m0s" {
				t.Errorf("event %s", b)
			}
		}},
		{"hostile executable names stay one defanged line", func(m *Message) { m.Executable = hostile },
			coredogv1.NotificationWeCom, func(t *testing.T, b []byte) {
				c := str(t, decode(t, b), "markdown", "content")
				if strings.Contains(c, "](http://phish") || strings.Contains(c, "<b>") || strings.Contains(c, "\n# heading") {
					t.Errorf("markdown injection got through:\n%s", c)
				}
				if len(c) > 4096 {
					t.Errorf("WeCom content is %d bytes", len(c))
				}
			}},
		{"hostile executable names mention no one on Lark", func(m *Message) { m.Executable = `<at user_id="all">all</at>` },
			coredogv1.NotificationLark, func(t *testing.T, b []byte) {
				if c := str(t, decode(t, b), "content", "text"); strings.Contains(c, "<at") || !strings.Contains(c, "at user_id") {
					t.Errorf("a mention got through, or the name was lost:\n%s", c)
				}
			}},
		{"hostile executable names are escaped for Slack", func(m *Message) { m.Executable = "<!channel> <http://x|y>" },
			coredogv1.NotificationSlack, func(t *testing.T, b []byte) {
				if strings.Contains(string(b), "<!channel>") {
					t.Errorf("unescaped mention: %s", b)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := testMessage()
			tc.mutate(m)
			req, err := Render(Sink{Name: "s", Type: tc.sink, URL: "https://example.invalid/x"}, m, testNow)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, req.Body)
		})
	}
}

// TestNotificationsShowTheTopFrames: every sink gets the crashing thread's
// first TopFrames frames, as one cleaned line in the chat sinks' facts and
// as frames in CoreDog's own JSON.
func TestNotificationsShowTheTopFrames(t *testing.T) {
	m := testMessage()
	for i := range 7 {
		m.Frames = append(m.Frames, coredogv1.StackFrame{Module: "server", Offset: fmt.Sprintf("0x%x", 0x100*i), Function: fmt.Sprintf("f%d\n<b>", i)})
	}
	m.Frames[0] = coredogv1.StackFrame{Module: "libc.so.6", Offset: "0x9"}
	m.Frames = m.Frames[:TopFrames]
	var top string
	for _, f := range m.Facts() {
		if f.Label == "Top frames" {
			top = f.Value
		}
	}
	want := "?? (libc.so.6+0x9) ← f1 <b> (server+0x100) ← f2 <b> (server+0x200) ← f3 <b> (server+0x300) ← f4 <b> (server+0x400)"
	if top != want {
		t.Errorf("Top frames fact:\n got %q\nwant %q", top, want)
	}
	req, err := Render(Sink{Name: "w", Type: coredogv1.NotificationWebhook, URL: "https://example.invalid/hook"}, m, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var d Data
	if err := json.Unmarshal(req.Body, &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Frames) != TopFrames || d.Frames[1].Function != "f1\n<b>" {
		t.Errorf("webhook frames: %+v", d.Frames)
	}
	for _, typ := range []coredogv1.NotificationSinkType{coredogv1.NotificationSlack, coredogv1.NotificationTeams, coredogv1.NotificationWeCom} {
		req, err := Render(Sink{Name: "c", Type: typ, URL: "https://example.invalid/hook"}, m, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(req.Body), "libc.so.6+0x9") {
			t.Errorf("%s message lacks the frames: %s", typ, req.Body)
		}
	}
}
