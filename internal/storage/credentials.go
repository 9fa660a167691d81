package storage

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// Keys of the Secret data that Open understands.
const (
	KeyAWSAccessKeyID     = "AWS_ACCESS_KEY_ID"
	KeyAWSSecretAccessKey = "AWS_SECRET_ACCESS_KEY"
	KeyAWSSessionToken    = "AWS_SESSION_TOKEN"
	KeyGCSCredentials     = "credentials.json"
	KeyAzureConnString    = "AZURE_STORAGE_CONNECTION_STRING"
	KeyAzureAccount       = "AZURE_STORAGE_ACCOUNT"
	KeyAzureKey           = "AZURE_STORAGE_KEY"
)

// ErrCredentials is returned when a Secret cannot be used for a scheme.
var ErrCredentials = errors.New("unusable storage credentials")

// CheckCredentials says what a Secret lacks for a scheme, naming the missing
// keys, or returns nil when the Secret is usable. nil creds (no secretRef)
// are always usable: they mean the cloud's default chain. It reads nothing
// but creds and opens no connection, so a policy can be checked when it is
// applied. Errors never contain the values.
func CheckCredentials(scheme string, creds map[string][]byte) error {
	if _, ok := knownQuery[scheme]; !ok {
		return fmt.Errorf("%w: scheme %q is not one of s3, gs, azblob, file", ErrCredentials, scheme)
	}
	if creds == nil {
		return nil
	}
	switch scheme {
	case SchemeS3:
		return lacks(creds, KeyAWSAccessKeyID, KeyAWSSecretAccessKey)
	case SchemeGCS:
		if err := lacks(creds, KeyGCSCredentials); err != nil {
			return err
		}
		return checkServiceAccountKey(creds[KeyGCSCredentials])
	case SchemeAzure:
		if value(creds, KeyAzureConnString) != "" {
			return nil
		}
		// The account may come from the URL instead, which only Open sees;
		// an account without a key, though, is certainly half a Secret.
		if value(creds, KeyAzureKey) == "" {
			if value(creds, KeyAzureAccount) != "" {
				return fmt.Errorf("%w: Secret lacks %s", ErrCredentials, KeyAzureKey)
			}
			return fmt.Errorf("%w: Secret lacks %s, or %s (with %s or the URL's storage_account)",
				ErrCredentials, KeyAzureConnString, KeyAzureKey, KeyAzureAccount)
		}
		return nil
	}
	return nil
}

// lacks names the keys of want that are missing or empty.
func lacks(creds map[string][]byte, want ...string) error {
	var missing []string
	for _, k := range want {
		if value(creds, k) == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%w: Secret lacks %s", ErrCredentials, strings.Join(missing, " and "))
}

// value is a Secret value without the newline that `echo > file` leaves.
func value(creds map[string][]byte, key string) string {
	return strings.TrimSpace(string(creds[key]))
}

// serviceAccountKey holds the fields of a Google service-account key file
// that must be present for a token to be minted.
type serviceAccountKey struct {
	Type        string `json:"type"`
	ClientEmail string `json:"client_email"`
	PrivateKey  string `json:"private_key"`
}

// checkServiceAccountKey finds what the Google library would only find at the
// first upload: a key that is not JSON, not a service account, or whose
// private key does not parse. Messages give offsets, never content.
func checkServiceAccountKey(data []byte) error {
	var k serviceAccountKey
	if err := json.Unmarshal(bytes.TrimSpace(data), &k); err != nil {
		if syn, ok := errors.AsType[*json.SyntaxError](err); ok {
			return fmt.Errorf("%w: %s is not valid JSON (syntax error at byte %d)", ErrCredentials, KeyGCSCredentials, syn.Offset)
		}
		return fmt.Errorf("%w: %s is not a JSON object with string fields", ErrCredentials, KeyGCSCredentials)
	}
	if k.Type != "service_account" {
		return fmt.Errorf("%w: %s has type %q; only service-account keys (type service_account) are accepted",
			ErrCredentials, KeyGCSCredentials, k.Type)
	}
	var missing []string
	if k.ClientEmail == "" {
		missing = append(missing, "client_email")
	}
	if k.PrivateKey == "" {
		missing = append(missing, "private_key")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s lacks %s", ErrCredentials, KeyGCSCredentials, strings.Join(missing, " and "))
	}
	block, _ := pem.Decode([]byte(k.PrivateKey))
	if block == nil {
		return fmt.Errorf("%w: the private_key in %s is not PEM", ErrCredentials, KeyGCSCredentials)
	}
	if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		if _, err1 := x509.ParsePKCS1PrivateKey(block.Bytes); err1 != nil {
			return fmt.Errorf("%w: the private_key in %s is neither a PKCS#8 nor a PKCS#1 key", ErrCredentials, KeyGCSCredentials)
		}
	}
	return nil
}
