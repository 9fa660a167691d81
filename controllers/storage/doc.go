// Package storage knows where dumps go: it parses and checks a policy's
// storage URL and renders object keys from its key template. It owns the
// rules that keep keys safe (no "..", no leading "/"); it must not read
// Kubernetes objects or hold credentials.
package storage
