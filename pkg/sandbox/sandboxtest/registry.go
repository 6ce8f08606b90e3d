package sandboxtest

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"

	"github.com/blackbox-market/blackbox/pkg/sandbox/imagetar"
)

// Registry is a read-only, in-process container registry (the pull side of
// the distribution HTTP API, plain HTTP) serving the busybox image, so that
// pulling by reference can be tested without the internet.
type Registry struct {
	*httptest.Server
	// Ref is the reference to pull, "127.0.0.1:PORT/blackbox/busybox:test".
	Ref string
	// ManifestDigest is the digest of the served manifest.
	ManifestDigest string
}

const manifestType = "application/vnd.oci.image.manifest.v1+json"

// NewRegistry starts a Registry on 127.0.0.1. Close it when done.
func NewRegistry() (*Registry, error) {
	layer, cfg, err := busyboxParts()
	if err != nil {
		return nil, err
	}
	manifest, err := imagetar.ManifestJSON(cfg, layer)
	if err != nil {
		return nil, err
	}
	blobs := map[string][]byte{imagetar.Digest(cfg): cfg, imagetar.Digest(layer): layer}
	md := imagetar.Digest(manifest)
	const repo = "/v2/blackbox/busybox/"
	serve := func(w http.ResponseWriter, r *http.Request, body []byte, typ, digest string) {
		w.Header().Set("Content-Type", typ)
		w.Header().Set("Docker-Content-Digest", digest)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		if r.Method == http.MethodGet {
			w.Write(body)
		}
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "read-only", http.StatusMethodNotAllowed)
			return
		}
		p := r.URL.Path
		switch {
		case p == "/v2/" || p == "/v2":
			w.WriteHeader(http.StatusOK)
		case strings.HasPrefix(p, repo+"manifests/"):
			ref := strings.TrimPrefix(p, repo+"manifests/")
			if ref != "test" && ref != md {
				http.NotFound(w, r)
				return
			}
			serve(w, r, manifest, manifestType, md)
		case strings.HasPrefix(p, repo+"blobs/"):
			d := strings.TrimPrefix(p, repo+"blobs/")
			b, ok := blobs[d]
			if !ok {
				http.NotFound(w, r)
				return
			}
			serve(w, r, b, "application/octet-stream", d)
		default:
			http.NotFound(w, r)
		}
	})
	srv := httptest.NewServer(h)
	host := strings.TrimPrefix(srv.URL, "http://")
	return &Registry{Server: srv, Ref: host + "/blackbox/busybox:test", ManifestDigest: md}, nil
}
