package notify

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// Sink is a configured sink with its secrets resolved. Its String form
// never shows them.
type Sink struct {
	Name string
	Type coredogv1.NotificationSinkType
	// URL is the endpoint, with whatever token it carries.
	URL string
	// Token is sent as a bearer token by Webhook and CloudEvents sinks.
	Token string
	// SigningSecret signs DingTalk and Lark requests.
	SigningSecret string
}

// String names the sink without its secrets.
func (s Sink) String() string { return string(s.Type) + " sink " + s.Name }

// Request is one HTTP POST to a sink.
type Request struct {
	URL    string
	Header http.Header
	Body   []byte
}

// Content types.
const (
	contentTypeJSON        = "application/json; charset=utf-8"
	contentTypeCloudEvents = "application/cloudevents+json; charset=utf-8"
	userAgent              = "coredog-notifier"
	// Limits of the chat services, with some room: WeCom markdown content
	// is at most 4096 bytes, Slack header text 150 characters.
	weComMaxBytes    = 4000
	dingTalkMaxBytes = 18000
	larkMaxBytes     = 18000
	slackHeaderRunes = 150
)

// Render builds the request for a message to a sink at time now (signed
// sinks put the time in their signature).
func Render(s Sink, m *Message, now time.Time) (*Request, error) {
	var (
		body any
		ct   = contentTypeJSON
		u    = s.URL
	)
	switch s.Type {
	case coredogv1.NotificationWebhook:
		body = webhookBody(m)
	case coredogv1.NotificationCloudEvents:
		body, ct = cloudEvent(m), contentTypeCloudEvents
	case coredogv1.NotificationSlack:
		body = slackBody(m)
	case coredogv1.NotificationTeams:
		body = teamsBody(m)
	case coredogv1.NotificationWeCom:
		body = weComBody(m)
	case coredogv1.NotificationDingTalk:
		body = dingTalkBody(m)
		if s.SigningSecret != "" {
			signed, err := dingTalkSignURL(u, s.SigningSecret, now)
			if err != nil {
				return nil, err
			}
			u = signed
		}
	case coredogv1.NotificationLark:
		b := larkBody(m)
		if s.SigningSecret != "" {
			ts := now.Unix()
			b.Timestamp, b.Sign = strconv.FormatInt(ts, 10), LarkSign(s.SigningSecret, ts)
		}
		body = b
	default:
		return nil, fmt.Errorf("%s: unknown sink type %q", s, s.Type)
	}
	data, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("%s: encoding the payload: %w", s, err)
	}
	h := http.Header{}
	h.Set("Content-Type", ct)
	h.Set("User-Agent", userAgent)
	if s.Token != "" && (s.Type == coredogv1.NotificationWebhook || s.Type == coredogv1.NotificationCloudEvents) {
		h.Set("Authorization", "Bearer "+s.Token)
	}
	return &Request{URL: u, Header: h, Body: data}, nil
}

// Data is CoreDog's own JSON document: the body of Webhook sinks and the
// data of CloudEvents.
type Data struct {
	// Type is the CloudEvents type, e.g. io.coredog.coredump.uploaded.
	Type    string `json:"type"`
	Event   Event  `json:"event"`
	Summary string `json:"summary"`
	Cluster string `json:"cluster,omitempty"`
	Policy  string `json:"policy"`
	// CoreDump names the CoreDump object (in the controller's namespace).
	CoreDump     ObjectRef `json:"coreDump"`
	Namespace    string    `json:"namespace,omitempty"`
	Pod          string    `json:"pod,omitempty"`
	Container    string    `json:"container,omitempty"`
	Image        string    `json:"image,omitempty"`
	Workload     string    `json:"workload,omitempty"`
	Node         string    `json:"node"`
	Executable   string    `json:"executable,omitempty"`
	Signal       string    `json:"signal,omitempty"`
	SignalNumber int32     `json:"signalNumber,omitempty"`
	Signature    string    `json:"signature,omitempty"`
	// Occurrences is how many CoreDumps share the signature.
	Occurrences int       `json:"occurrences,omitempty"`
	CrashedAt   time.Time `json:"crashedAt"`
	Size        int64     `json:"size,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	Message     string    `json:"message,omitempty"`
	Location    string    `json:"location,omitempty"`
	// DownloadURL is a pre-signed URL (or the location, for stores that
	// cannot sign); DownloadURLExpiresAt is absent when it does not expire.
	DownloadURL          string         `json:"downloadURL,omitempty"`
	DownloadURLExpiresAt *time.Time     `json:"downloadURLExpiresAt,omitempty"`
	Throttled            *ThrottledData `json:"throttled,omitempty"`
	// Frames are the crashing thread's top frames, innermost first (at
	// most TopFrames), as status.analysis has them.
	Frames []coredogv1.StackFrame `json:"frames,omitempty"`
}

// ObjectRef names a Kubernetes object.
type ObjectRef struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	UID       string `json:"uid"`
}

// ThrottledData counts the throttled dumps of one rate-limit window.
type ThrottledData struct {
	Count     int       `json:"count"`
	Since     time.Time `json:"since"`
	Until     time.Time `json:"until"`
	RateLimit RateLimit `json:"rateLimit"`
}

// RateLimit is the policy's rate limit.
type RateLimit struct {
	Count  int32  `json:"count"`
	Window string `json:"window"`
}

func webhookBody(m *Message) *Data {
	d := &Data{
		Type: m.CloudEventType(), Event: m.Event, Summary: m.Title(), Cluster: m.Cluster, Policy: m.Policy,
		CoreDump:  ObjectRef{Name: m.CoreDump, Namespace: m.CoreDumpNamespace, UID: m.UID},
		Namespace: m.Namespace, Pod: m.Pod, Container: m.Container, Image: m.Image, Workload: m.Workload,
		Node: m.Node, Executable: m.Executable, Signal: m.Signal, SignalNumber: m.SignalNumber,
		Signature: m.Signature, Occurrences: m.Occurrences, CrashedAt: m.CrashedAt.UTC(), Size: m.Size,
		Reason: m.Reason, Message: m.Detail, Location: m.Location, DownloadURL: m.Link, Frames: m.Frames,
	}
	if !m.LinkExpires.IsZero() {
		t := m.LinkExpires.UTC()
		d.DownloadURLExpiresAt = &t
	}
	if t := m.Throttled; t != nil {
		d.Throttled = &ThrottledData{Count: t.Count, Since: t.Since.UTC(), Until: t.Until.UTC(),
			RateLimit: RateLimit{Count: t.Limit, Window: t.Window.String()}}
	}
	return d
}

// CloudEvent is a CloudEvents 1.0 event in structured mode.
type CloudEvent struct {
	SpecVersion     string    `json:"specversion"`
	Type            string    `json:"type"`
	Source          string    `json:"source"`
	ID              string    `json:"id"`
	Time            time.Time `json:"time"`
	Subject         string    `json:"subject,omitempty"`
	DataContentType string    `json:"datacontenttype"`
	Data            *Data     `json:"data"`
}

// CloudEventSource is the source attribute: the policy, in the cluster
// when one is named.
func CloudEventSource(cluster, policy string) string {
	src := "/coredog"
	if cluster != "" {
		src += "/clusters/" + url.PathEscape(cluster)
	}
	return src + "/coredumppolicies/" + url.PathEscape(policy)
}

// cloudEvent uses the CoreDump's UID as the event ID: one event per dump
// (a throttled window's event carries the UID of the dump that opened it),
// so a consumer that sees an ID twice knows it is a redelivery.
func cloudEvent(m *Message) *CloudEvent {
	t := m.CrashedAt
	if m.Throttled != nil {
		t = m.Throttled.Until
	}
	return &CloudEvent{
		SpecVersion: "1.0", Type: m.CloudEventType(), Source: CloudEventSource(m.Cluster, m.Policy),
		ID: m.UID, Time: t.UTC(), Subject: m.CoreDump, DataContentType: "application/json", Data: webhookBody(m),
	}
}

// Slack incoming webhook: text is the fallback for notifications, blocks
// what the channel shows.
func slackBody(m *Message) map[string]any {
	title := m.Title()
	header := title
	if r := []rune(header); len(r) > slackHeaderRunes {
		header = string(r[:slackHeaderRunes-1]) + "…"
	}
	var fields []map[string]string
	var frames string
	for _, f := range m.Facts() {
		if f.Label == factTopFrames {
			// Its own section: a field is short, and a section has ten.
			frames = "*" + f.Label + "*\n" + slackEscape(f.Value)
			continue
		}
		if len(fields) == 10 { // Slack's limit per section
			continue
		}
		fields = append(fields, map[string]string{"type": "mrkdwn", "text": "*" + f.Label + "*\n" + slackEscape(f.Value)})
	}
	blocks := []map[string]any{
		{"type": "header", "text": map[string]any{"type": "plain_text", "text": header}},
		{"type": "section", "fields": fields},
	}
	if frames != "" {
		blocks = append(blocks, map[string]any{"type": "section", "text": map[string]string{"type": "mrkdwn", "text": frames}})
	}
	text := slackEscape(title)
	if m.Link != "" {
		var link string
		if m.LinkIsURL() {
			link = "<" + m.Link + "|Download the core dump> (" + m.LinkNote() + ")"
		} else {
			link = "Stored at `" + slackEscape(m.Link) + "`"
		}
		blocks = append(blocks, map[string]any{"type": "section", "text": map[string]string{"type": "mrkdwn", "text": link}})
		text += "\n" + link
	}
	return map[string]any{"text": text, "blocks": blocks}
}

// Teams: a message with an Adaptive Card, which both Workflows ("When a
// Teams webhook request is received") and the older incoming webhooks accept.
func teamsBody(m *Message) map[string]any {
	mf := m.Facts()
	facts := make([]map[string]string, 0, len(mf))
	for _, f := range mf {
		facts = append(facts, map[string]string{"title": f.Label, "value": defang(f.Value)})
	}
	body := []map[string]any{
		{"type": "TextBlock", "text": defang(m.Title()), "weight": "Bolder", "size": "Medium", "wrap": true},
		{"type": "FactSet", "facts": facts},
	}
	card := map[string]any{
		"$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
		"type":    "AdaptiveCard",
		"version": "1.4",
		"body":    body,
		"msteams": map[string]string{"width": "Full"},
	}
	if m.Link != "" {
		if m.LinkIsURL() {
			card["actions"] = []map[string]string{{"type": "Action.OpenUrl", "title": "Download the core dump", "url": m.Link}}
			body = append(body, map[string]any{"type": "TextBlock", "text": "Link " + m.LinkNote(), "isSubtle": true, "wrap": true})
		} else {
			body = append(body, map[string]any{"type": "TextBlock", "text": "Stored at " + defang(m.Link), "wrap": true})
		}
		card["body"] = body
	}
	return map[string]any{
		"type": "message",
		"attachments": []map[string]any{{
			"contentType": "application/vnd.microsoft.card.adaptive",
			"contentUrl":  nil,
			"content":     card,
		}},
	}
}

// markdown renders title, facts and link for WeCom and DingTalk.
func markdown(m *Message, heading func(string) string) string {
	var b strings.Builder
	b.WriteString(heading(defang(m.Title())) + "\n\n")
	for _, f := range m.Facts() {
		fmt.Fprintf(&b, "- **%s**: %s\n", f.Label, defang(f.Value))
	}
	if m.Link != "" {
		if m.LinkIsURL() {
			fmt.Fprintf(&b, "\n[Download the core dump](%s) (%s)\n", m.Link, m.LinkNote())
		} else {
			fmt.Fprintf(&b, "\nStored at %s\n", defang(m.Link))
		}
	}
	return b.String()
}

// WeCom group robot: {"msgtype":"markdown","markdown":{"content":...}}.
func weComBody(m *Message) map[string]any {
	return map[string]any{"msgtype": "markdown", "markdown": map[string]string{"content": truncateBytes(markdown(m, func(t string) string { return "**" + t + "**" }), weComMaxBytes)}}
}

// DingTalk custom robot: {"msgtype":"markdown","markdown":{"title":..,"text":..}}.
func dingTalkBody(m *Message) map[string]any {
	text := markdown(m, func(t string) string { return "#### " + t })
	return map[string]any{"msgtype": "markdown", "markdown": map[string]string{
		"title": truncateBytes(defang(m.Title()), 200),
		"text":  truncateBytes(text, dingTalkMaxBytes),
	}}
}

// larkMessage is a Lark (Feishu) custom bot text message; Timestamp and
// Sign are set when the bot verifies signatures.
type larkMessage struct {
	Timestamp string            `json:"timestamp,omitempty"`
	Sign      string            `json:"sign,omitempty"`
	MsgType   string            `json:"msg_type"`
	Content   map[string]string `json:"content"`
}

func larkBody(m *Message) *larkMessage {
	var b strings.Builder
	// Lark's text messages turn <at user_id="all"></at> into a mention of
	// everyone; what the node reported is defanged as for the other sinks.
	b.WriteString(defang(m.Title()) + "\n")
	for _, f := range m.Facts() {
		fmt.Fprintf(&b, "%s: %s\n", f.Label, defang(f.Value))
	}
	if m.Link != "" {
		if m.LinkIsURL() {
			fmt.Fprintf(&b, "Download (%s): %s\n", m.LinkNote(), m.Link)
		} else {
			fmt.Fprintf(&b, "Stored at: %s\n", m.Link)
		}
	}
	return &larkMessage{MsgType: "text", Content: map[string]string{"text": truncateBytes(b.String(), larkMaxBytes)}}
}
