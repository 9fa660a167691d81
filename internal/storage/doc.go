// Package storage knows where dumps go: it parses and checks a policy's
// storage URL, renders object keys from its key template, and streams
// objects into the bucket behind a small Store interface: file.go on the
// file system, s3*.go with the AWS SDK's S3 client, azure.go with Azure's
// blob clients, gcs.go with Google's storage SDK through its HTTP/JSON
// client (never its gRPC client, though the SDK links gRPC's packages). None
// goes through gocloud.dev/blob; its URLs, key escaping and file:// sidecars
// are kept, so that objects written by earlier versions read back. It owns
// the rules that keep keys safe (no "..", no leading "/") and the rules for
// turning a Secret's data into cloud credentials. It owns the conventions of
// stored objects, which the manager, the plugin and the demo use rather than
// repeat: a dump's extension, content type and decoder by compression
// (Encoding), its metadata keys, the key of the JSON document beside it
// (SidecarKey), and turning a key into its URL and back (Location.ObjectURL,
// Location.KeyOf, LocationOf). It names compressions as the API does, but
// imports neither the API nor Kubernetes. It must not read Kubernetes
// objects: the caller fetches the Secret and hands over its data. It never
// puts credentials into the process environment, into logs or into error
// messages, because one controller serves many policies with different
// Secrets at the same time.
//
// # Credentials
//
// Open takes the data of the Secret named by spec.storage.secretRef, or nil
// when there is none; nil means the cloud's default chain, which is how
// IRSA, GKE Workload Identity and Azure Workload Identity reach the
// controller. Values are trimmed of surrounding white space, because
// Secrets made with `echo value > file` end in a newline.
//
//   - s3://     AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (both, or
//     neither), optional AWS_SESSION_TOKEN. Without a Secret: the AWS SDK's
//     default chain (environment, web identity/IRSA, shared config and
//     profile=, container and instance roles).
//   - gs://     credentials.json, a service-account JSON key. Only keys of
//     type service_account are accepted: the other credential file types can
//     make the controller read files or run programs. Without a Secret:
//     Application Default Credentials (Workload Identity, metadata server).
//   - azblob:// AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_KEY with
//     the account from AZURE_STORAGE_ACCOUNT or the URL's storage_account.
//     Without a Secret: DefaultAzureCredential, and the URL must name the
//     account (storage_account=).
//   - file://   none; a Secret is ignored.
//
// # Memory and multipart
//
// Writes stream: a Store holds at most a few parts per write whatever the
// object's size; S3 parts are 5 MiB up to 1.25 GiB of object, and other
// stores' parts are 5 MiB when the caller bounds the size
// (WriteOptions.SizeHint) within 512 of them. S3 parts and Azure blocks
// are reused anonymous mappings; GCS's chunk is the SDK's buffer
// (Writer.ChunkSize), on the Go heap. S3 uploads larger than one part go
// through a multipart upload, which is aborted when the write fails, so no
// object appears at the key and no parts are left behind to pay for; a
// failed GCS upload never completes its session, which GCS drops.
//
// # Signed URLs
//
// SignedURL hands out read-only links for notifications, signed with the
// same credentials: SigV4 query signing for S3; the SDK's V4 signing with
// the Secret's service-account key for GCS (or, without a key, IAM signBlob
// as the workload's service account); a shared-key SAS for Azure, or a user
// delegation SAS when the identity has no key. file:// cannot sign
// (ErrSignedURLUnsupported). Links live at most seven days, the most S3 and
// GCS allow.
package storage
