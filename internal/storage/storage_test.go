package storage

import (
	"errors"
	"path"
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	cases := []struct {
		url               string
		wantErr           string
		bucket, prefix    string
		bucketURL, object string
	}{
		{url: "s3://cores", bucket: "cores", bucketURL: "s3://cores", object: "s3://cores/k"},
		{url: "s3://cores/prod/eu/?region=eu-west-1&endpoint=http://127.0.0.1:9000&use_path_style=true", bucket: "cores", prefix: "prod/eu/",
			bucketURL: "s3://cores?endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=eu-west-1&use_path_style=true", object: "s3://cores/prod/eu/k"},
		{url: "gs://b/p", bucket: "b", prefix: "p/", bucketURL: "gs://b", object: "gs://b/p/k"},
		{url: "gs://b/p?endpoint=http://127.0.0.1:4443&anonymous=true", bucket: "b", prefix: "p/",
			bucketURL: "gs://b?anonymous=true&endpoint=http%3A%2F%2F127.0.0.1%3A4443", object: "gs://b/p/k"},
		{url: "gs://b?region=x", wantErr: `unknown option "region" for gs://`},
		{url: "azblob://container", bucket: "container", bucketURL: "azblob://container", object: "azblob://container/k"},
		{url: "file:///var/lib/store", bucket: "/var/lib/store", bucketURL: "file:///var/lib/store", object: "file:///var/lib/store/k"},
		{url: "", wantErr: "empty"},
		{url: "http://bucket", wantErr: "scheme"},
		{url: "s3://", wantErr: "no bucket"},
		{url: "s3://b?regoin=x", wantErr: `unknown option "regoin"`},
		{url: "s3://key:secret@b", wantErr: "secretRef"},
		{url: "s3://b/../x", wantErr: ".. segments"},
		{url: "file://host/dir", wantErr: "no host"},
		{url: "file:///", wantErr: "absolute directory"},
		{url: "file:///a/../b", wantErr: "absolute directory"},
		{url: "s3://b/%zz", wantErr: "invalid URL escape"},
	}
	for _, tc := range cases {
		t.Run(tc.url, func(t *testing.T) {
			loc, err := ParseURL(tc.url)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrInvalidURL) {
					t.Fatalf("ParseURL(%q) error = %v, want one containing %q", tc.url, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseURL(%q): %v", tc.url, err)
			}
			if loc.Bucket != tc.bucket || loc.Prefix != tc.prefix {
				t.Errorf("bucket, prefix = %q, %q; want %q, %q", loc.Bucket, loc.Prefix, tc.bucket, tc.prefix)
			}
			if got := loc.BucketURL(); got != tc.bucketURL {
				t.Errorf("BucketURL = %q, want %q", got, tc.bucketURL)
			}
			if got := loc.ObjectURL("k"); got != tc.object {
				t.Errorf("ObjectURL = %q, want %q", got, tc.object)
			}
		})
	}
}

func TestKeyTemplate(t *testing.T) {
	fields := KeyFields{Namespace: "team-a", Pod: "db-0", Executable: "postgres", SignalName: "SIGSEGV", Time: "20260101T000000Z", Name: "cd-1", Signal: 11}
	cases := []struct {
		name, template string
		fields         KeyFields
		want           string
		parseErr       string
		renderErr      error
	}{
		{name: "default", template: "{{.Namespace}}/{{.Pod}}/{{.Time}}-{{.Executable}}-{{.SignalName}}/{{.Name}}", fields: fields,
			want: "team-a/db-0/20260101T000000Z-postgres-SIGSEGV/cd-1"},
		{name: "the name inside the last segment is not enough", template: LegacyDefaultKeyTemplate, fields: fields,
			want: "team-a/db-0/20260101T000000Z-postgres-SIGSEGV-cd-1/cd-1"},
		{name: "without the name, it is appended", template: "{{.Node}}/{{.Signal}}", fields: fields, want: "_/11/cd-1"},
		{name: "the name alone", template: "{{.Name}}", fields: fields, want: "cd-1"},
		{name: "the name first", template: "{{.Name}}/{{.Pod}}", fields: fields, want: "cd-1/db-0/cd-1"},
		{name: "slashes in values are flattened", template: "{{.Pod}}/{{.Executable}}", fields: KeyFields{Pod: "../../etc", Executable: "a/b"}, want: ".._.._etc/a_b"},
		{name: "dot-dot value", template: "x/{{.Pod}}/y", fields: KeyFields{Pod: ".."}, want: "x/__/y"},
		{name: "unknown field", template: "{{.Bucket}}", parseErr: "can't evaluate field Bucket"},
		{name: "syntax error", template: "{{.Pod", parseErr: "parsing key template"},
		{name: "always empty", template: "{{if false}}x{{end}}", parseErr: "empty key"},
		{name: "leading slash", template: "/{{.Pod}}", parseErr: "starts with /"},
		{name: "literal dot-dot", template: "../{{.Pod}}", parseErr: ".. segment"},
		{name: "runaway output", template: `{{printf "%01000000d" 1}}`, parseErr: "longer than 1024"},
		{name: "range writing", template: "{{range 1000000000}}x{{end}}", parseErr: "range actions are not allowed"},
		{name: "range writing nothing", template: "{{range 1000000000}}{{range 1000000000}}{{end}}{{end}}x", parseErr: "range actions are not allowed"},
		{name: "range in an else branch", template: "{{if .Pod}}{{.Pod}}{{else}}{{range 9}}{{break}}{{end}}{{end}}", parseErr: "range actions are not allowed"},
		{name: "recursive template", template: `{{define "k"}}{{template "k"}}{{end}}x{{template "k"}}`, parseErr: "template actions are not allowed"},
		{name: "recursion hidden in a define", template: `{{define "k"}}{{range 5}}{{end}}{{end}}{{.Pod}}`, parseErr: "range actions are not allowed"},
		{name: "block", template: `{{block "k" .}}{{.Pod}}{{end}}`, parseErr: "template actions are not allowed"},
		{name: "empty segment", template: "{{.Pod}}//x", parseErr: "empty path segment"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kt, err := ParseKeyTemplate(tc.template)
			if tc.parseErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.parseErr) {
					t.Fatalf("ParseKeyTemplate error = %v, want one containing %q", err, tc.parseErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := kt.Render(tc.fields)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("Render = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestKeysOfTwoDumpsNeverCollide renders the key of a victim's dump and of
// a CoreDump forged to land on it: its fields (executable, signal name, and
// a name of its choosing, which anyone with CoreDump create may pick) are
// made so that the earlier default template rendered the victim's key, and
// a template without the name renders it whatever the name. The keys must
// differ under every template.
func TestKeysOfTwoDumpsNeverCollide(t *testing.T) {
	victim := KeyFields{Namespace: "team-a", Pod: "db-0", Executable: "postgres", SignalName: "SIGSEGV", Time: "20260101T000000Z", Name: "core-0123456789abcdef0123"}
	forged := victim
	forged.Executable, forged.SignalName, forged.Name = "postgres-SIGSEGV", "core", "0123456789abcdef0123"
	for _, tmpl := range []string{
		LegacyDefaultKeyTemplate,
		"{{.Namespace}}/{{.Pod}}/{{.Time}}-{{.Executable}}-{{.SignalName}}/{{.Name}}",
		"{{.Namespace}}/{{.Pod}}/{{.Time}}",
		"{{.Pod}}-{{.Name}}",
	} {
		kt, err := ParseKeyTemplate(tmpl)
		if err != nil {
			t.Fatal(err)
		}
		v, err := kt.Render(victim)
		if err != nil {
			t.Fatal(err)
		}
		f, err := kt.Render(forged)
		if err != nil {
			t.Fatal(err)
		}
		if v == f || SidecarKey(v+".zst") == SidecarKey(f+".zst") {
			t.Errorf("template %q: the forged dump renders the victim's key %q", tmpl, v)
		}
		if path.Base(v) != victim.Name || path.Base(f) != forged.Name {
			t.Errorf("template %q: keys %q and %q do not end in their dump's name", tmpl, v, f)
		}
	}
}

func FuzzKeyTemplate(f *testing.F) {
	f.Add("{{.Namespace}}/{{.Pod}}", "ns", "pod")
	f.Add("{{.Pod}}/x", "..", "\x00")
	f.Fuzz(func(t *testing.T, tmpl, ns, pod string) {
		kt, err := ParseKeyTemplate(tmpl)
		if err != nil {
			return
		}
		key, err := kt.Render(KeyFields{Namespace: ns, Pod: pod})
		if err != nil {
			return
		}
		if checkKey(key) != nil {
			t.Fatalf("Render returned an unsafe key %q", key)
		}
	})
}
