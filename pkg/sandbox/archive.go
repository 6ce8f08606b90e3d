package sandbox

import (
	"io"

	"github.com/blackbox-market/blackbox/pkg/sandbox/imagetar"
)

// ValidateArchive checks that r is an uncompressed OCI-layout or
// docker-archive tarball of at most maxBytes that is safe to hand to
// containerd; see imagetar.Validate. Errors wrap ErrBadImage.
func ValidateArchive(r io.Reader, maxBytes int64) error { return imagetar.Validate(r, maxBytes) }
