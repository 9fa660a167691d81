// Package krew checks kubectl-coredog's krew release as `make krew` builds
// it: hack/krew.sh builds the archive for this machine's platform and the
// manifest, and the tests check the manifest's checksums and file lists
// against the archive bytes, run krew's own validate-krew-manifest on it
// and install the plugin from the local archive with krew itself (both
// built by hack/krew-tools.sh, cached outside the repository). Nothing is
// downloaded from the manifest's release URIs.
package krew
