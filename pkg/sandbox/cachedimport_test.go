//go:build integration

package sandbox_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/namespaces"

	"github.com/blackbox-market/blackbox/pkg/sandbox"
	"github.com/blackbox-market/blackbox/pkg/sandbox/sandboxtest"
)

// TestCachedImport: the seller's answer to "do you hold this digest" (job
// protocol 1.2.0) is yes only for an image imported from a tarball of that
// digest and still in containerd.
func TestCachedImport(t *testing.T) {
	sb, _ := newSandbox(t)
	ctx := context.Background()
	var buf bytes.Buffer
	digest, err := sandboxtest.WriteBusyboxImageWithData(&buf, sandboxtest.OCILayout, 1<<10, 42)
	if err != nil {
		t.Fatal(err)
	}
	if got := sandboxtest.Digest(buf.Bytes()); got != digest {
		t.Fatalf("WriteBusyboxImageWithData says %s, the tarball is %s", digest, got)
	}
	for _, d := range []string{digest, "sha256:" + strings.Repeat("0", 64), "sha256:ABC", "latest"} {
		if img, ok := sb.CachedImport(ctx, d); ok {
			t.Fatalf("%s before any import: %+v", d, img)
		}
	}
	img, err := sb.ImportImage(ctx, &buf, digest)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := sb.CachedImport(ctx, digest)
	if !ok || got.Name != img.Name || got.Name != sandbox.ImportName(digest) || got.Digest != digest {
		t.Fatalf("after import: %+v %v; imported %+v", got, ok, img)
	}
	// Gone from containerd (collected, or removed by the operator): no
	// longer held, whatever this process remembers.
	c, err := containerd.New(daemonAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.ImageService().Delete(namespaces.WithNamespace(ctx, testNS), img.Name, images.SynchronousDelete()); err != nil {
		t.Fatal(err)
	}
	if got, ok := sb.CachedImport(ctx, digest); ok {
		t.Fatalf("after the image was deleted: %+v", got)
	}
}
