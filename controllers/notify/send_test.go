package notify

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

func TestSendErrors(t *testing.T) {
	const token = "T0KEN-s3cr3t-value"
	cases := []struct {
		name      string
		typ       coredogv1.NotificationSinkType
		answer    func(w http.ResponseWriter, n int)
		retryable bool
		want      string
	}{
		{"5xx is retried", coredogv1.NotificationWebhook, func(w http.ResponseWriter, _ int) {
			http.Error(w, "upstream down", http.StatusBadGateway)
		}, true, "502 Bad Gateway: upstream down"},
		{"429 is retried", coredogv1.NotificationSlack, func(w http.ResponseWriter, _ int) {
			w.WriteHeader(http.StatusTooManyRequests)
		}, true, "429"},
		{"4xx is final", coredogv1.NotificationSlack, func(w http.ResponseWriter, _ int) {
			http.Error(w, "invalid_token", http.StatusForbidden)
		}, false, "403 Forbidden: invalid_token"},
		{"redirects are not followed", coredogv1.NotificationWebhook, func(w http.ResponseWriter, _ int) {
			w.Header().Set("Location", "https://elsewhere.example/")
			w.WriteHeader(http.StatusFound)
		}, false, "302"},
		{"DingTalk refusals in a 200", coredogv1.NotificationDingTalk, func(w http.ResponseWriter, _ int) {
			_, _ = io.WriteString(w, `{"errcode":310000,"errmsg":"sign not match"}`)
		}, false, "errcode 310000: sign not match"},
		{"DingTalk too fast is retried", coredogv1.NotificationDingTalk, func(w http.ResponseWriter, _ int) {
			_, _ = io.WriteString(w, `{"errcode":130101,"errmsg":"send too fast"}`)
		}, true, "errcode 130101"},
		{"WeCom refusals in a 200", coredogv1.NotificationWeCom, func(w http.ResponseWriter, _ int) {
			_, _ = io.WriteString(w, `{"errcode":93000,"errmsg":"invalid webhook url"}`)
		}, false, "errcode 93000"},
		{"Lark refusals in a 200", coredogv1.NotificationLark, func(w http.ResponseWriter, _ int) {
			_, _ = io.WriteString(w, `{"code":19021,"msg":"sign match fail or timestamp is not within one hour from current time"}`)
		}, false, "code 19021"},
		{"a body that quotes the token is scrubbed", coredogv1.NotificationWebhook, func(w http.ResponseWriter, _ int) {
			http.Error(w, "no hook /hooks/"+token+" here, token="+token, http.StatusNotFound)
		}, false, "[redacted]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCapture(t, tc.answer)
			sink := Sink{Name: "s", Type: tc.typ, URL: c.srv.URL + "/hooks/" + token + "?access_token=" + token, Token: token}
			s := &Sender{Client: NewHTTPClient(5 * time.Second)}
			err := s.Send(context.Background(), sink, testMessage())
			if err == nil {
				t.Fatal("no error")
			}
			if Retryable(err) != tc.retryable {
				t.Errorf("Retryable = %v, want %v (%v)", !tc.retryable, tc.retryable, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q lacks %q", err, tc.want)
			}
			if strings.Contains(err.Error(), token) || strings.Contains(err.Error(), c.srv.URL) {
				t.Errorf("error leaks the sink's URL or token: %q", err)
			}
		})
	}
}

func TestSendToUnreachableSinkIsRetryableAndQuiet(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	const token = "xoxb-unreachable-secret"
	sink := Sink{Name: "s", Type: coredogv1.NotificationSlack, URL: "http://" + addr + "/services/" + token}
	err = (&Sender{Client: NewHTTPClient(2 * time.Second)}).Send(context.Background(), sink, testMessage())
	if err == nil || !Retryable(err) {
		t.Fatalf("err = %v, want a retryable error", err)
	}
	if strings.Contains(err.Error(), token) || strings.Contains(err.Error(), "/services/") {
		t.Errorf("error leaks the URL: %q", err)
	}
}

func TestSendRefusesNonHTTPURLs(t *testing.T) {
	for _, u := range []string{"file:///etc/passwd", "hooks.slack.com/services/x", "gopher://x/y"} {
		err := (&Sender{}).Send(context.Background(), Sink{Name: "s", Type: coredogv1.NotificationWebhook, URL: u}, testMessage())
		if err == nil || Retryable(err) || strings.Contains(err.Error(), u) {
			t.Errorf("%s: err = %v", u, err)
		}
	}
}

func TestRedact(t *testing.T) {
	sink := Sink{
		URL:           "https://oapi.dingtalk.com/robot/send?access_token=0123456789abcdef",
		SigningSecret: "SECabcdef",
	}
	in := `Post "https://oapi.dingtalk.com/robot/send?access_token=0123456789abcdef": lookup oapi.dingtalk.com: no such host; token 0123456789abcdef, secret SECabcdef`
	out := redact(in, sink)
	for _, leak := range []string{"0123456789abcdef", "SECabcdef"} {
		if strings.Contains(out, leak) {
			t.Errorf("%q survives: %s", leak, out)
		}
	}
	if !strings.Contains(out, "oapi.dingtalk.com") {
		t.Errorf("the host is not a secret, and helps: %s", out)
	}
}
