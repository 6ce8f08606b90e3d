// Package sandboxtest builds container images for tests, benchmarks and demos
// without a registry: a one-layer image holding the host's static busybox
// (Debian's busybox-static), written as a docker-archive or OCI-layout tarball
// that pkg/sandbox imports like any buyer's image.
package sandboxtest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"sort"
	"strings"

	"github.com/blackbox-market/blackbox/pkg/sandbox/imagetar"
)

// BusyboxPath is where Debian's busybox-static installs its binary.
const BusyboxPath = "/bin/busybox"

// Format is the layout of an image tarball (imagetar's).
type Format = imagetar.Format

const (
	// DockerArchive is the `docker save` layout.
	DockerArchive = imagetar.DockerArchive
	// OCILayout is the OCI image layout.
	OCILayout = imagetar.OCILayout
)

// BusyboxImage returns an image tarball in the given format whose root file
// system holds busybox at /bin/busybox with a symlink per applet, /etc/passwd,
// and the empty directories /tmp, /out, /proc, /dev, /sys. The image's default
// command is `sh`; PATH is /bin. The tarball is deterministic for a given
// busybox binary.
func BusyboxImage(format Format) ([]byte, error) {
	var buf bytes.Buffer
	_, err := WriteBusyboxImage(&buf, format)
	return buf.Bytes(), err
}

var busyboxConfig = imagetar.Config{Env: []string{"PATH=/bin"}, Cmd: []string{"sh"}, Tag: "blackbox.local/busybox:test"}

// busyboxParts returns the layer tar and the image config JSON.
func busyboxParts() (layer, cfg []byte, err error) {
	if layer, err = busyboxLayer(); err != nil {
		return nil, nil, err
	}
	cfg, err = imagetar.ConfigJSON(layer, busyboxConfig)
	return layer, cfg, err
}

// Digest returns "sha256:<hex>" of b, the digest a buyer names for a tarball.
func Digest(b []byte) string { return imagetar.Digest(b) }

func busyboxLayer() ([]byte, error) {
	files, err := busyboxEntries()
	if err != nil {
		return nil, err
	}
	return imagetar.Layer(files)
}

// busyboxEntries are the files of the busybox image's layer.
func busyboxEntries() ([]imagetar.Entry, error) {
	bin, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("sandboxtest: read busybox (apt-get install busybox-static): %w", err)
	}
	applets, err := busyboxApplets()
	if err != nil {
		return nil, err
	}
	files := []imagetar.Entry{
		{Name: "bin/", Dir: true},
		{Name: "bin/busybox", Data: bin, Mode: 0o755},
	}
	for _, a := range applets {
		if a == "busybox" {
			continue
		}
		files = append(files, imagetar.Entry{Name: "bin/" + a, Link: "busybox"})
	}
	for _, d := range []string{"dev/", "etc/", "out/", "proc/", "root/", "sys/", "tmp/"} {
		e := imagetar.Entry{Name: d, Dir: true}
		if d == "tmp/" {
			e.Mode = 0o1777
		}
		files = append(files, e)
	}
	files = append(files,
		imagetar.Entry{Name: "etc/passwd", Data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")},
		imagetar.Entry{Name: "etc/group", Data: []byte("root:x:0:\nnogroup:x:65534:\n")},
	)
	return files, nil
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

// WriteBusyboxImage writes BusyboxImage(format) to w and returns its digest.
func WriteBusyboxImage(w io.Writer, format Format) (string, error) {
	layer, err := busyboxLayer()
	if err != nil {
		return "", err
	}
	return imagetar.Write(w, layer, busyboxConfig, format)
}

// WriteBusyboxImageWithData writes the busybox image with one more file,
// /data, of size bytes generated from seed (incompressible, and the same
// for the same seed), and returns the tarball's digest: a large image for
// transfer tests and benchmarks, distinct per seed.
func WriteBusyboxImageWithData(w io.Writer, format Format, size int, seed uint64) (string, error) {
	files, err := busyboxEntries()
	if err != nil {
		return "", err
	}
	data := make([]byte, size)
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	rand.NewChaCha8(key).Read(data)
	layer, err := imagetar.Layer(append(files, imagetar.Entry{Name: "data", Data: data}))
	if err != nil {
		return "", err
	}
	return imagetar.Write(w, layer, busyboxConfig, format)
}
