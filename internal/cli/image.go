package cli

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/blackbox-market/blackbox/pkg/quantity"
	"github.com/blackbox-market/blackbox/pkg/sandbox/imagetar"
)

func newImageCmd(a *App) *cobra.Command {
	c := &cobra.Command{
		Use:   "image",
		Short: "Make job images without a registry or a container engine",
		Example: `  blackbox image build --from ./rootfs -o job.tar
  blackbox image build --from ./web -o web.tar`,
	}
	c.AddCommand(newImageBuildCmd(a))
	return c
}

// imageFlags are `blackbox image build`'s flags.
type imageFlags struct {
	from, out, workdir, tag string
	entrypoint, env         []string
	oci                     bool
}

func newImageBuildCmd(a *App) *cobra.Command {
	var f imageFlags
	c := &cobra.Command{
		Use:   "build --from DIR|BINARY -o FILE.tar [flags]",
		Short: "Pack a directory or a static binary into an image tarball that submit and sandbox run accept",
		Long: `Pack a directory (a root file system: its files, directories and
symlinks, owned by root in the image) or a single statically linked binary
(placed at /bin/NAME) into a one-layer image tarball: a docker archive as
'docker save' writes, or with --oci an OCI layout. The tarball is the same
bytes every time for the same files, so its sha256 names the job's image.

Empty /tmp, /out, /in, /proc, /dev and /sys are added where missing (the
sandbox mounts the job's scratch, outputs and inputs there), and a minimal
/etc/passwd and /etc/group.

A job's command replaces the image's entrypoint, so name the program in it:
'blackbox submit --image web.tar -- /bin/web --port 8080'. --entrypoint is
what runs when no command is given ('blackbox sandbox run' without one).

With docker or podman, 'docker save IMAGE -o job.tar' (or 'podman save
--format docker-archive IMAGE -o job.tar') makes an image tarball too.`,
		Example: `  # a static Go program: CGO_ENABLED=0 go build -o web .
  blackbox image build --from ./web -o web.tar
  # then: blackbox submit --image web.tar -- /bin/web --once
  # a directory holding a root file system (e.g. busybox and a script)
  blackbox image build --from ./rootfs -o job.tar --env PATH=/bin --entrypoint /bin/sh,/job.sh
  blackbox image build --from ./rootfs -o job-oci.tar --oci`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.buildImage(f)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.from, "from", "", "a directory (the image's root file system) or a statically linked binary (required)")
	fl.StringVarP(&f.out, "output", "o", "", "the image tarball to write (required)")
	fl.StringSliceVar(&f.entrypoint, "entrypoint", nil, "the command run when the job gives none, comma-separated (default for a binary: /bin/NAME)")
	fl.StringArrayVarP(&f.env, "env", "e", nil, "environment variable K=V in the image (repeatable; default PATH=/bin:/usr/bin:/sbin:/usr/sbin)")
	fl.StringVar(&f.workdir, "workdir", "/", "the job's working directory")
	fl.StringVar(&f.tag, "tag", "blackbox.local/job:latest", "the name `docker load` shows for the image")
	fl.BoolVar(&f.oci, "oci", false, "write an OCI image layout instead of a docker archive")
	_ = c.MarkFlagRequired("from")
	_ = c.MarkFlagRequired("output")
	return c
}

// skeleton is what every image gets where its files lack it.
var skeleton = []imagetar.Entry{
	{Name: "bin/", Dir: true}, {Name: "dev/", Dir: true}, {Name: "etc/", Dir: true},
	{Name: "in/", Dir: true}, {Name: "out/", Dir: true}, {Name: "proc/", Dir: true},
	{Name: "sys/", Dir: true}, {Name: "tmp/", Dir: true, Mode: 0o1777},
	{Name: "etc/passwd", Data: []byte("root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")},
	{Name: "etc/group", Data: []byte("root:x:0:\nnogroup:x:65534:\n")},
}

func (a *App) buildImage(f imageFlags) error {
	for _, e := range f.env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return fmt.Errorf("--env %q: want KEY=VALUE", e)
		}
	}
	if !strings.HasPrefix(f.workdir, "/") {
		return fmt.Errorf("--workdir %q: want an absolute path in the image", f.workdir)
	}
	st, err := os.Stat(f.from)
	if err != nil {
		return fmt.Errorf("--from: %w", err)
	}
	cfg := imagetar.Config{Entrypoint: f.entrypoint, Env: f.env, WorkingDir: f.workdir, Tag: f.tag}
	if len(cfg.Env) == 0 {
		cfg.Env = []string{"PATH=/bin:/usr/bin:/sbin:/usr/sbin"}
	}
	var entries []imagetar.Entry
	switch {
	case st.IsDir():
		if entries, err = dirEntries(f.from, f.out); err != nil {
			return err
		}
	case st.Mode().IsRegular():
		arch, err := staticBinary(f.from)
		if err != nil {
			return err
		}
		name := "bin/" + filepath.Base(f.from)
		entries = []imagetar.Entry{{Name: "bin/", Dir: true}, {Name: name, Path: f.from, Mode: 0o755}}
		cfg.Architecture = arch
		if len(cfg.Entrypoint) == 0 {
			cfg.Entrypoint = []string{"/" + name}
		}
	default:
		return fmt.Errorf("--from %s: not a directory or a regular file", f.from)
	}
	entries = withSkeleton(entries)
	layer, err := imagetar.Layer(entries)
	if err != nil {
		return err
	}
	format := imagetar.DockerArchive
	if f.oci {
		format = imagetar.OCILayout
	}
	var buf bytes.Buffer
	digest, err := imagetar.Write(&buf, layer, cfg, format)
	if err != nil {
		return err
	}
	// What a seller checks before it imports: refuse to write what it
	// would refuse.
	if err := imagetar.Validate(bytes.NewReader(buf.Bytes()), math.MaxInt64); err != nil {
		return fmt.Errorf("the image is not one a seller accepts: %w", err)
	}
	if err := os.WriteFile(f.out, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write the image: %w", err)
	}
	run := "CMD"
	if len(cfg.Entrypoint) > 0 {
		run = strings.Join(cfg.Entrypoint, " ")
	}
	fmt.Fprintf(a.Stdout, "%s: %s, %d files, %s\n", f.out, quantity.FormatSize(int64(buf.Len())), len(entries), digest)
	fmt.Fprintf(a.Stdout, "run it: blackbox submit --image %s -- %s\n", f.out, run)
	return nil
}

// dirEntries lists dir's tree as layer entries, sorted, owned by root:
// directories, regular files (with their permission bits) and symlinks;
// anything else (a socket, a device) is refused. skip, the image being
// written, is left out should it be inside dir.
func dirEntries(dir, skip string) ([]imagetar.Entry, error) {
	var out []imagetar.Entry
	skip, _ = filepath.Abs(skip)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if abs, _ := filepath.Abs(p); abs == skip {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		perm := int64(info.Mode().Perm())
		if info.Mode()&fs.ModeSticky != 0 {
			perm |= 0o1000
		}
		switch {
		case d.IsDir():
			out = append(out, imagetar.Entry{Name: rel + "/", Dir: true, Mode: perm})
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out = append(out, imagetar.Entry{Name: rel, Link: target})
		case info.Mode().IsRegular():
			out = append(out, imagetar.Entry{Name: rel, Path: p, Mode: perm})
		default:
			return fmt.Errorf("--from: %s is a %s: an image holds only files, directories and symlinks", p, info.Mode().Type())
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--from %s is empty", dir)
	}
	return out, nil
}

// withSkeleton adds the skeleton entries entries lack, directories first,
// keeping the order a tar needs (a directory before what it holds).
func withSkeleton(entries []imagetar.Entry) []imagetar.Entry {
	have := map[string]bool{}
	for _, e := range entries {
		have[strings.TrimSuffix(e.Name, "/")] = true
	}
	var add []imagetar.Entry
	for _, s := range skeleton {
		if !have[strings.TrimSuffix(s.Name, "/")] {
			add = append(add, s)
		}
	}
	return slices.Concat(add, entries)
}

// staticBinary checks that path is a statically linked ELF executable for
// Linux and returns its architecture as GOARCH names it: a dynamically
// linked one would find no libraries in an image of its own.
func staticBinary(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		var fe *elf.FormatError
		if errors.As(err, &fe) {
			return "", fmt.Errorf("--from %s is not an executable (ELF) binary: pass a static binary, or a directory holding the image's files", path)
		}
		return "", fmt.Errorf("--from: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "", fmt.Errorf("--from %s is dynamically linked: the image would hold no libraries for it; build it static (Go: CGO_ENABLED=0 go build; C: -static), or pack a directory with its libraries, or use `docker save`", path)
		}
	}
	arch := map[elf.Machine]string{elf.EM_X86_64: "amd64", elf.EM_AARCH64: "arm64", elf.EM_386: "386",
		elf.EM_ARM: "arm", elf.EM_RISCV: "riscv64", elf.EM_PPC64: "ppc64le", elf.EM_S390: "s390x"}[f.Machine]
	if arch == "" {
		return "", fmt.Errorf("--from %s: unknown CPU architecture %s", path, f.Machine)
	}
	return arch, nil
}
