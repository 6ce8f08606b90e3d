package imagetar

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"
)

// Building images: a one-layer image tarball, in either layout the sandbox
// imports, written without a registry or a container engine. `blackbox
// image build` packs a directory or a static binary with it, and the tests
// pack the host's busybox (pkg/sandbox/sandboxtest).

// Format is the layout of an image tarball.
type Format int

const (
	// DockerArchive is the `docker save` layout: manifest.json, a config
	// JSON and one layer.tar per layer.
	DockerArchive Format = iota
	// OCILayout is the OCI image layout: oci-layout, index.json, blobs/sha256/….
	OCILayout
)

// Epoch is the modification time of every entry written here, so that the
// same files always give the same image digest.
var Epoch = time.Unix(0, 0).UTC()

// Entry is one file of a layer. Exactly one of Dir, Link, Data or Path says
// what it is: a directory, a symlink to Link, a file holding Data, or a
// file copied from Path on this machine.
type Entry struct {
	// Name is the path in the image, relative, with a trailing slash for
	// a directory ("bin/", "bin/sh").
	Name string
	Dir  bool
	Link string
	Data []byte
	Path string
	// Mode is the permission bits; zero means 0644 for files, 0755 for
	// directories.
	Mode int64
}

// Layer writes entries, in order, as an uncompressed layer tar owned by
// root with every time set to Epoch.
func Layer(entries []Entry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.Name, ModTime: Epoch, Format: tar.FormatPAX, Mode: 0o644}
		var src io.Reader
		switch {
		case e.Dir:
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		case e.Link != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, e.Link, 0o777
		case e.Path != "":
			b, err := os.ReadFile(e.Path)
			if err != nil {
				return nil, err
			}
			h.Typeflag, h.Size, src = tar.TypeReg, int64(len(b)), bytes.NewReader(b)
		default:
			h.Typeflag, h.Size, src = tar.TypeReg, int64(len(e.Data)), bytes.NewReader(e.Data)
		}
		if e.Mode != 0 {
			h.Mode = e.Mode
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("layer: %s: %w", e.Name, err)
		}
		if src != nil {
			if _, err := io.Copy(tw, src); err != nil {
				return nil, fmt.Errorf("layer: %s: %w", e.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Config is what an image says about how to run it.
type Config struct {
	// Entrypoint and Cmd are the default command (a job's own command
	// replaces both).
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	// Architecture is GOARCH's name for the CPU (default: this machine's).
	Architecture string
	// Tag names the image in a docker archive (docker load shows it).
	Tag string
}

// ConfigJSON is the image config of a one-layer image of layer: how to run
// it, and the layer's digest.
func ConfigJSON(layer []byte, cfg Config) ([]byte, error) {
	rc := map[string]any{"Env": cfg.Env, "WorkingDir": cfg.WorkingDir}
	if cfg.WorkingDir == "" {
		rc["WorkingDir"] = "/"
	}
	if len(cfg.Entrypoint) > 0 {
		rc["Entrypoint"] = cfg.Entrypoint
	}
	if len(cfg.Cmd) > 0 {
		rc["Cmd"] = cfg.Cmd
	}
	// containerd drops an image whose config lacks os or architecture.
	return json.Marshal(map[string]any{
		"architecture": cfg.arch(),
		"os":           "linux",
		"created":      Epoch.Format(time.RFC3339),
		"config":       rc,
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{Digest(layer)}},
	})
}

func (c Config) arch() string {
	if c.Architecture == "" {
		return runtime.GOARCH
	}
	return c.Architecture
}

// ManifestJSON is the OCI manifest of an image of config and one layer.
func ManifestJSON(config, layer []byte) ([]byte, error) {
	return json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{
			"mediaType": "application/vnd.oci.image.config.v1+json",
			"digest":    Digest(config), "size": len(config),
		},
		"layers": []map[string]any{{
			"mediaType": "application/vnd.oci.image.layer.v1.tar",
			"digest":    Digest(layer), "size": len(layer),
		}},
	})
}

// Write writes a one-layer image of layer to w in format and returns the
// tarball's digest, "sha256:<hex>", the digest a buyer names.
func Write(w io.Writer, layer []byte, cfg Config, format Format) (string, error) {
	layerDigest := Digest(layer)
	config, err := ConfigJSON(layer, cfg)
	if err != nil {
		return "", err
	}
	cfgDigest := Digest(config)
	var files []Entry
	switch format {
	case DockerArchive:
		tag := cfg.Tag
		if tag == "" {
			tag = "blackbox.local/image:latest"
		}
		manifest, err := json.Marshal([]map[string]any{{
			"Config":   hexOf(cfgDigest) + ".json",
			"RepoTags": []string{tag},
			"Layers":   []string{hexOf(layerDigest) + "/layer.tar"},
		}})
		if err != nil {
			return "", err
		}
		files = []Entry{
			{Name: hexOf(layerDigest) + "/", Dir: true},
			{Name: hexOf(layerDigest) + "/layer.tar", Data: layer},
			{Name: hexOf(cfgDigest) + ".json", Data: config},
			{Name: "manifest.json", Data: manifest},
		}
	case OCILayout:
		manifest, err := ManifestJSON(config, layer)
		if err != nil {
			return "", err
		}
		manifestDigest := Digest(manifest)
		index, err := json.Marshal(map[string]any{
			"schemaVersion": 2,
			"mediaType":     "application/vnd.oci.image.index.v1+json",
			"manifests": []map[string]any{{
				"mediaType": "application/vnd.oci.image.manifest.v1+json",
				"digest":    manifestDigest, "size": len(manifest),
				"platform": map[string]string{"os": "linux", "architecture": cfg.arch()},
			}},
		})
		if err != nil {
			return "", err
		}
		files = []Entry{
			{Name: "oci-layout", Data: []byte(`{"imageLayoutVersion":"1.0.0"}`)},
			{Name: "blobs/", Dir: true},
			{Name: "blobs/sha256/", Dir: true},
			{Name: "blobs/sha256/" + hexOf(layerDigest), Data: layer},
			{Name: "blobs/sha256/" + hexOf(cfgDigest), Data: config},
			{Name: "blobs/sha256/" + hexOf(manifestDigest), Data: manifest},
			{Name: "index.json", Data: index},
		}
	default:
		return "", fmt.Errorf("imagetar: unknown format %d", format)
	}
	b, err := Layer(files)
	if err != nil {
		return "", err
	}
	if _, err := w.Write(b); err != nil {
		return "", err
	}
	return Digest(b), nil
}

// Digest returns "sha256:<hex>" of b.
func Digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func hexOf(d string) string { return strings.TrimPrefix(d, "sha256:") }
