package storage

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"sync"
	"testing"
)

func secret(kv ...string) map[string][]byte {
	m := map[string][]byte{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = []byte(kv[i+1])
	}
	return m
}

// testPrivateKey is one RSA key in PEM, made once: key generation is slow
// under the race detector.
var testPrivateKey = sync.OnceValue(func() string {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
})

// serviceAccountJSON is a key file as the Google console writes it.
func serviceAccountJSON(t *testing.T, typ string, fields map[string]string) string {
	t.Helper()
	doc := map[string]string{
		"type": typ, "project_id": "p", "client_email": "coredog@p.iam.gserviceaccount.com",
		"token_uri": "https://oauth2.googleapis.com/token",
	}
	doc["private_key"] = testPrivateKey()
	for k, v := range fields {
		if v == "" {
			delete(doc, k)
		} else {
			doc[k] = v
		}
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestCheckCredentials(t *testing.T) {
	goodKey := serviceAccountJSON(t, "service_account", nil)
	cases := []struct {
		name    string
		scheme  string
		creds   map[string][]byte
		wantErr string // "" means usable
	}{
		{name: "s3 default chain", scheme: SchemeS3, creds: nil},
		{name: "s3 empty Secret", scheme: SchemeS3, creds: secret(), wantErr: "lacks AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"},
		{name: "s3 id only", scheme: SchemeS3, creds: secret(KeyAWSAccessKeyID, "AKIA1"), wantErr: "lacks AWS_SECRET_ACCESS_KEY"},
		{name: "s3 secret only", scheme: SchemeS3, creds: secret(KeyAWSSecretAccessKey, "s"), wantErr: "lacks AWS_ACCESS_KEY_ID"},
		{name: "s3 blank secret", scheme: SchemeS3, creds: secret(KeyAWSAccessKeyID, "AKIA1", KeyAWSSecretAccessKey, " \n"), wantErr: "lacks AWS_SECRET_ACCESS_KEY"},
		{name: "s3 session token alone", scheme: SchemeS3, creds: secret(KeyAWSSessionToken, "tok"), wantErr: "lacks AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"},
		{name: "s3 keys", scheme: SchemeS3, creds: secret(KeyAWSAccessKeyID, "AKIA1", KeyAWSSecretAccessKey, "s\n")},
		{name: "s3 keys and token", scheme: SchemeS3, creds: secret(KeyAWSAccessKeyID, "AKIA1", KeyAWSSecretAccessKey, "s", KeyAWSSessionToken, "t")},

		{name: "gs default chain", scheme: SchemeGCS, creds: nil},
		{name: "gs empty Secret", scheme: SchemeGCS, creds: secret("key.json", goodKey), wantErr: "lacks credentials.json"},
		{name: "gs not JSON", scheme: SchemeGCS, creds: secret(KeyGCSCredentials, `{"type": service_account}`), wantErr: "not valid JSON (syntax error at byte"},
		{name: "gs JSON array", scheme: SchemeGCS, creds: secret(KeyGCSCredentials, `["x"]`), wantErr: "not a JSON object"},
		{name: "gs user credentials", scheme: SchemeGCS, creds: secret(KeyGCSCredentials, serviceAccountJSON(t, "authorized_user", nil)), wantErr: `type "authorized_user"`},
		{name: "gs external account", scheme: SchemeGCS, creds: secret(KeyGCSCredentials, serviceAccountJSON(t, "external_account", nil)), wantErr: "only service-account keys"},
		{name: "gs no private key", scheme: SchemeGCS, creds: secret(KeyGCSCredentials, serviceAccountJSON(t, "service_account", map[string]string{"private_key": ""})), wantErr: "lacks private_key"},
		{name: "gs no email", scheme: SchemeGCS, creds: secret(KeyGCSCredentials, serviceAccountJSON(t, "service_account", map[string]string{"client_email": ""})), wantErr: "lacks client_email"},
		{name: "gs key not PEM", scheme: SchemeGCS, creds: secret(KeyGCSCredentials, serviceAccountJSON(t, "service_account", map[string]string{"private_key": "MIIEvQIBADANBg"})), wantErr: "not PEM"},
		{name: "gs key not a key", scheme: SchemeGCS, creds: secret(KeyGCSCredentials, serviceAccountJSON(t, "service_account", map[string]string{"private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"})), wantErr: "neither a PKCS#8 nor a PKCS#1 key"},
		{name: "gs service account", scheme: SchemeGCS, creds: secret(KeyGCSCredentials, goodKey+"\n")},

		{name: "azblob default chain", scheme: SchemeAzure, creds: nil},
		{name: "azblob empty Secret", scheme: SchemeAzure, creds: secret(), wantErr: "lacks AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_KEY"},
		{name: "azblob account only", scheme: SchemeAzure, creds: secret(KeyAzureAccount, "acct"), wantErr: "lacks AZURE_STORAGE_KEY"},
		{name: "azblob key only (account from URL)", scheme: SchemeAzure, creds: secret(KeyAzureKey, "a2V5")},
		{name: "azblob account and key", scheme: SchemeAzure, creds: secret(KeyAzureAccount, "acct", KeyAzureKey, "a2V5")},
		{name: "azblob connection string", scheme: SchemeAzure, creds: secret(KeyAzureConnString, "AccountName=a;AccountKey=a2V5")},

		{name: "file without Secret", scheme: SchemeFile, creds: nil},
		{name: "file ignores a Secret", scheme: SchemeFile, creds: secret("anything", "x")},
		{name: "unknown scheme", scheme: "ftp", creds: nil, wantErr: `scheme "ftp"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckCredentials(tc.scheme, tc.creds)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckCredentials: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrCredentials) {
				t.Fatalf("CheckCredentials error = %v, want ErrCredentials containing %q", err, tc.wantErr)
			}
			assertNoSecretIn(t, err, tc.creds)
		})
	}
}

// assertNoSecretIn fails if err quotes any longer Secret value.
func assertNoSecretIn(t *testing.T, err error, creds map[string][]byte) {
	t.Helper()
	for k, v := range creds {
		if s := strings.TrimSpace(string(v)); len(s) >= 8 && strings.Contains(err.Error(), s) {
			t.Fatalf("the error quotes the value of %s: %v", k, err)
		}
	}
}

// TestOpen covers what Open decides before any network traffic: every case
// here must pass on a machine without network or cloud credentials.
func TestOpen(t *testing.T) {
	goodKey := serviceAccountJSON(t, "service_account", nil)
	// The Azurite development account, published by Microsoft.
	const azuriteKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
	cases := []struct {
		name    string
		url     string
		creds   map[string][]byte
		wantErr string // "" means Open succeeds
		is      error
	}{
		{name: "s3 static keys", url: "s3://b/p?region=eu-west-1", creds: secret(KeyAWSAccessKeyID, "AKIA1", KeyAWSSecretAccessKey, "s3cr3t-value")},
		{name: "s3 half a Secret", url: "s3://b", creds: secret(KeyAWSAccessKeyID, "AKIA1"), wantErr: "lacks AWS_SECRET_ACCESS_KEY", is: ErrCredentials},
		{name: "s3 bad use_path_style", url: "s3://b?use_path_style=yes", creds: secret(KeyAWSAccessKeyID, "a", KeyAWSSecretAccessKey, "b"), wantErr: `use_path_style="yes"`, is: ErrInvalidURL},
		{name: "s3 endpoint without host", url: "s3://b?endpoint=http://", creds: secret(KeyAWSAccessKeyID, "a", KeyAWSSecretAccessKey, "b"), wantErr: "not an http(s) URL", is: ErrInvalidURL},
		{name: "s3 endpoint ftp", url: "s3://b?endpoint=ftp://minio:21", creds: secret(KeyAWSAccessKeyID, "a", KeyAWSSecretAccessKey, "b"), wantErr: "not an http(s) URL", is: ErrInvalidURL},
		{name: "s3 scheme-less endpoint", url: "s3://b?endpoint=minio.example:9000", creds: secret(KeyAWSAccessKeyID, "a", KeyAWSSecretAccessKey, "b")},
		{name: "s3 disable_https without endpoint", url: "s3://b?disable_https=true", creds: secret(KeyAWSAccessKeyID, "a", KeyAWSSecretAccessKey, "b"), wantErr: "disable_https needs an endpoint", is: ErrInvalidURL},
		{name: "s3 disable_https against https", url: "s3://b?disable_https=true&endpoint=https://m:9000", creds: secret(KeyAWSAccessKeyID, "a", KeyAWSSecretAccessKey, "b"), wantErr: "contradicts", is: ErrInvalidURL},
		{name: "s3 profile with Secret", url: "s3://b?profile=prod", creds: secret(KeyAWSAccessKeyID, "a", KeyAWSSecretAccessKey, "b"), wantErr: "cannot be combined with a Secret", is: ErrInvalidURL},
		{name: "s3 bad sse_type", url: "s3://b?sse_type=rot13", creds: secret(KeyAWSAccessKeyID, "a", KeyAWSSecretAccessKey, "b"), wantErr: `sse_type="rot13"`, is: ErrInvalidURL},
		{name: "s3 kms", url: "s3://b?sse_type=aws:kms&kmskeyid=k", creds: secret(KeyAWSAccessKeyID, "a", KeyAWSSecretAccessKey, "b")},

		{name: "gs service account", url: "gs://b/p", creds: secret(KeyGCSCredentials, goodKey)},
		{name: "gs malformed key", url: "gs://b", creds: secret(KeyGCSCredentials, `{"type":"service_account","private_key":"-----BEGIN`), wantErr: "credentials.json is not valid JSON", is: ErrCredentials},
		{name: "gs user credentials", url: "gs://b", creds: secret(KeyGCSCredentials, serviceAccountJSON(t, "authorized_user", nil)), wantErr: "only service-account keys", is: ErrCredentials},
		{name: "gs Secret without the key", url: "gs://b", creds: secret("sa.json", goodKey), wantErr: "Secret lacks credentials.json", is: ErrCredentials},
		{name: "gs anonymous with Secret", url: "gs://b?anonymous=true", creds: secret(KeyGCSCredentials, goodKey), wantErr: "cannot be combined", is: ErrInvalidURL},

		{name: "azblob shared key", url: "azblob://c?storage_account=devstoreaccount1", creds: secret(KeyAzureKey, azuriteKey)},
		{name: "azblob account and key from Secret", url: "azblob://c?localemu=true&domain=127.0.0.1:10000&protocol=http", creds: secret(KeyAzureAccount, "devstoreaccount1", KeyAzureKey, azuriteKey)},
		{name: "azblob connection string", url: "azblob://c", creds: secret(KeyAzureConnString, "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="+azuriteKey+";BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;")},
		{name: "azblob malformed connection string", url: "azblob://c", creds: secret(KeyAzureConnString, "this is not a connection string"), wantErr: "AZURE_STORAGE_CONNECTION_STRING: connection string is either blank or malformed", is: ErrCredentials},
		{name: "azblob key not base64", url: "azblob://c?storage_account=acct", creds: secret(KeyAzureKey, "not base64 at all!!"), wantErr: "AZURE_STORAGE_KEY: decode account key", is: ErrCredentials},
		{name: "azblob key without account", url: "azblob://c", creds: secret(KeyAzureKey, azuriteKey), wantErr: "lacks AZURE_STORAGE_ACCOUNT, and the URL has no storage_account", is: ErrCredentials},
		{name: "azblob accounts differ", url: "azblob://c?storage_account=one", creds: secret(KeyAzureAccount, "two", KeyAzureKey, azuriteKey), wantErr: "differ", is: ErrCredentials},
		{name: "azblob default chain without account", url: "azblob://c", creds: nil, wantErr: "needs the storage account in the URL (azblob://c?storage_account=NAME)", is: ErrInvalidURL},
		{name: "azblob bad protocol", url: "azblob://c?storage_account=a&protocol=ftp", creds: secret(KeyAzureKey, azuriteKey), wantErr: `invalid protocol "ftp"`, is: ErrInvalidURL},

		{name: "file bad file_mode", url: "file:///var/lib/x?file_mode=600", wantErr: `file_mode="600" is not an octal permission`, is: ErrInvalidURL},
		{name: "file dir mode locks us out", url: "file:///var/lib/x?dir_file_mode=0500", wantErr: "lock the controller out", is: ErrInvalidURL},
		{name: "file bad metadata", url: "file:///var/lib/x?metadata=inline", wantErr: "the only value is skip", is: ErrInvalidURL},
		{name: "file missing mount point", url: "file:///nonexistent/coredog-test/store?create_dir=false", wantErr: "does not exist, and create_dir=false"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(context.Background(), mustParse(t, tc.url), tc.creds)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				if err := s.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
				return
			}
			if err == nil {
				_ = s.Close()
				t.Fatalf("Open succeeded, want an error containing %q", tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Fatalf("Open error = %v, want one containing %q (is %v)", err, tc.wantErr, tc.is)
			}
			assertNoSecretIn(t, err, tc.creds)
		})
	}
}

// FuzzCheckCredentials feeds arbitrary Secret values, which anyone who can
// write Secrets in the manager's namespace controls, through the checks.
func FuzzCheckCredentials(f *testing.F) {
	f.Add(`{"type":"service_account","client_email":"a@b","private_key":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}`)
	f.Add(`{"type":`)
	f.Add("AccountName=a;AccountKey=a2V5")
	f.Fuzz(func(t *testing.T, v string) {
		for _, scheme := range []string{SchemeS3, SchemeGCS, SchemeAzure, SchemeFile} {
			creds := secret(KeyGCSCredentials, v, KeyAzureConnString, v, KeyAWSAccessKeyID, v)
			if err := CheckCredentials(scheme, creds); err != nil && !errors.Is(err, ErrCredentials) {
				t.Fatalf("%s: error %v is not ErrCredentials", scheme, err)
			}
		}
	})
}
