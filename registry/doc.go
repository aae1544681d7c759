// Package registry publishes what strata builds as OCI artifacts and brings
// them back onto machines and devices (DESIGN §5).
//
// An image becomes, per version, an OCI image index (tagged with the version
// and the publish tags) that groups one strata artifact manifest per image
// and platform (artifactType application/vnd.strata.image.v1: a strata config
// blob and one layer per output file) and, for images with an oci output, the
// ordinary container image beside it. docs/artifacts.md lists every media
// type and annotation.
//
// A repository is either a local OCI image layout inside the store (a name
// with no registry host, such as fleet/x86-nuc) or a repository on any OCI
// registry (localhost:5000/fleet/x86-nuc). Registries are reached with
// oras-go v2: credentials from the docker config and its credential helpers,
// TLS unless --plain-http or a loopback host, retries with back-off that honour
// Retry-After, and a 1.0-compatible manifest form for registries that refuse
// OCI 1.1 fields.
//
// Client is the entry point: Publish (the executor's Publisher seam), Versions
// (a repository's history), Pull (verified, into the local layout) and Install
// (A/B slots on a device). Rollback needs no client. Cache is the registry
// side of the remote build cache: an action cache whose results travel as one
// reproducible layer each.
//
// The package is silent: it reports progress through Options.Events and
// never logs; secrets never reach its errors or events.
package registry
