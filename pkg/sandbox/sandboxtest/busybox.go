// Package sandboxtest builds container images for tests, benchmarks and demos
// without a registry: a one-layer image holding the host's static busybox
// (Debian's busybox-static), written as a docker-archive or OCI-layout tarball
// that pkg/sandbox imports like any buyer's image.
package sandboxtest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"time"
)

// BusyboxPath is where Debian's busybox-static installs its binary.
const BusyboxPath = "/bin/busybox"

// Format is the layout of an image tarball.
type Format int

const (
	// DockerArchive is the `docker save` layout: manifest.json, a config
	// JSON and one layer.tar per layer.
	DockerArchive Format = iota
	// OCILayout is the OCI image layout: oci-layout, index.json, blobs/sha256/….
	OCILayout
)

// epoch is the fixed modification time of every file, so that the same
// busybox binary always gives the same image digest.
var epoch = time.Unix(0, 0).UTC()

// BusyboxImage returns an image tarball in the given format whose root file
// system holds busybox at /bin/busybox with a symlink per applet, /etc/passwd,
// and the empty directories /tmp, /out, /proc, /dev, /sys. The image's default
// command is `sh`; PATH is /bin. The tarball is deterministic for a given
// busybox binary.
func BusyboxImage(format Format) ([]byte, error) {
	layer, cfg, err := busyboxParts()
	if err != nil {
		return nil, err
	}
	layerDigest := digestOf(layer)
	cfgDigest := digestOf(cfg)
	files := []file{}
	switch format {
	case DockerArchive:
		manifest, err := json.Marshal([]map[string]any{{
			"Config":   hexOf(cfgDigest) + ".json",
			"RepoTags": []string{"blackbox.local/busybox:test"},
			"Layers":   []string{hexOf(layerDigest) + "/layer.tar"},
		}})
		if err != nil {
			return nil, err
		}
		files = append(files,
			file{name: hexOf(layerDigest) + "/", dir: true},
			file{name: hexOf(layerDigest) + "/layer.tar", data: layer},
			file{name: hexOf(cfgDigest) + ".json", data: cfg},
			file{name: "manifest.json", data: manifest},
		)
	case OCILayout:
		manifest, err := json.Marshal(map[string]any{
			"schemaVersion": 2,
			"mediaType":     "application/vnd.oci.image.manifest.v1+json",
			"config": map[string]any{
				"mediaType": "application/vnd.oci.image.config.v1+json",
				"digest":    cfgDigest, "size": len(cfg),
			},
			"layers": []map[string]any{{
				"mediaType": "application/vnd.oci.image.layer.v1.tar",
				"digest":    layerDigest, "size": len(layer),
			}},
		})
		if err != nil {
			return nil, err
		}
		manifestDigest := digestOf(manifest)
		index, err := json.Marshal(map[string]any{
			"schemaVersion": 2,
			"mediaType":     "application/vnd.oci.image.index.v1+json",
			"manifests": []map[string]any{{
				"mediaType": "application/vnd.oci.image.manifest.v1+json",
				"digest":    manifestDigest, "size": len(manifest),
				"platform": map[string]string{"os": "linux", "architecture": runtime.GOARCH},
			}},
		})
		if err != nil {
			return nil, err
		}
		files = append(files,
			file{name: "oci-layout", data: []byte(`{"imageLayoutVersion":"1.0.0"}`)},
			file{name: "blobs/", dir: true},
			file{name: "blobs/sha256/", dir: true},
			file{name: "blobs/sha256/" + hexOf(layerDigest), data: layer},
			file{name: "blobs/sha256/" + hexOf(cfgDigest), data: cfg},
			file{name: "blobs/sha256/" + hexOf(manifestDigest), data: manifest},
			file{name: "index.json", data: index},
		)
	default:
		return nil, fmt.Errorf("sandboxtest: unknown format %d", format)
	}
	return writeTar(files)
}

// busyboxParts returns the layer tar and the image config JSON.
func busyboxParts() (layer, cfg []byte, err error) {
	layer, err = busyboxLayer()
	if err != nil {
		return nil, nil, err
	}
	cfg, err = json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"created":      epoch.Format(time.RFC3339),
		"config": map[string]any{
			"Env":        []string{"PATH=/bin"},
			"Cmd":        []string{"sh"},
			"WorkingDir": "/",
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{digestOf(layer)}},
	})
	return layer, cfg, err
}

// Digest returns "sha256:<hex>" of b, the digest a buyer names for a tarball.
func Digest(b []byte) string { return digestOf(b) }

type file struct {
	name    string
	data    []byte
	dir     bool
	link    string
	mode    int64
	symlink bool
}

func busyboxLayer() ([]byte, error) {
	bin, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("sandboxtest: read busybox (apt-get install busybox-static): %w", err)
	}
	applets, err := busyboxApplets()
	if err != nil {
		return nil, err
	}
	files := []file{
		{name: "bin/", dir: true},
		{name: "bin/busybox", data: bin, mode: 0o755},
	}
	for _, a := range applets {
		if a == "busybox" {
			continue
		}
		files = append(files, file{name: "bin/" + a, symlink: true, link: "busybox"})
	}
	for _, d := range []string{"dev/", "etc/", "out/", "proc/", "root/", "sys/", "tmp/"} {
		files = append(files, file{name: d, dir: true})
	}
	files = append(files,
		file{name: "etc/passwd", data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")},
		file{name: "etc/group", data: []byte("root:x:0:\nnogroup:x:65534:\n")},
	)
	return writeTar(files)
}

// busyboxApplets lists the applets the host's busybox provides.
func busyboxApplets() ([]string, error) {
	out, err := exec.Command(BusyboxPath, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("sandboxtest: busybox --list: %w", err)
	}
	var applets []string
	for _, l := range strings.Fields(string(out)) {
		if l != "" && !strings.Contains(l, "/") {
			applets = append(applets, l)
		}
	}
	sort.Strings(applets)
	return applets, nil
}

func writeTar(files []file) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, ModTime: epoch, Format: tar.FormatPAX, Mode: 0o644}
		switch {
		case f.dir:
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
			if f.name == "tmp/" {
				h.Mode = 0o1777
			}
		case f.symlink:
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, f.link, 0o777
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
			if f.mode != 0 {
				h.Mode = f.mode
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func hexOf(d string) string { return strings.TrimPrefix(d, "sha256:") }

// WriteBusyboxImage writes BusyboxImage(format) to w and returns its digest.
func WriteBusyboxImage(w io.Writer, format Format) (string, error) {
	b, err := BusyboxImage(format)
	if err != nil {
		return "", err
	}
	if _, err := w.Write(b); err != nil {
		return "", err
	}
	return Digest(b), nil
}
