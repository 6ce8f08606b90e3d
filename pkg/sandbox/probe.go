package sandbox

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

// probeAMD64 is the machine code of the probe job on x86-64: write(1,
// "ok\n", 3); exit(0). It needs nothing from the image but itself.
var probeAMD64 = []byte{
	0xb8, 0x01, 0x00, 0x00, 0x00, // mov eax, 1 (write)
	0xbf, 0x01, 0x00, 0x00, 0x00, // mov edi, 1 (stdout)
	0x48, 0x8d, 0x35, 0x10, 0x00, 0x00, 0x00, // lea rsi, [rip+16] (msg)
	0xba, 0x03, 0x00, 0x00, 0x00, // mov edx, 3
	0x0f, 0x05, // syscall
	0xb8, 0x3c, 0x00, 0x00, 0x00, // mov eax, 60 (exit)
	0x31, 0xff, // xor edi, edi
	0x0f, 0x05, // syscall
	'o', 'k', '\n', // msg
}

// staticELF wraps code in a minimal static ELF64 executable for x86-64: a
// file header, one loadable segment, the code.
func staticELF(code []byte) []byte {
	const base, ehsize, phsize = 0x400000, 64, 56
	var b bytes.Buffer
	le := binary.LittleEndian
	b.Write([]byte{0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	w := func(v any) { binary.Write(&b, le, v) }
	total := uint64(ehsize + phsize + len(code))
	w(uint16(elf.ET_EXEC))
	w(uint16(elf.EM_X86_64))
	w(uint32(1))
	w(uint64(base + ehsize + phsize)) // entry
	w(uint64(ehsize))                 // program headers
	w(uint64(0))                      // no section headers
	w(uint32(0))
	w(uint16(ehsize))
	w(uint16(phsize))
	w(uint16(1))
	w(uint16(0))
	w(uint16(0))
	w(uint16(0))
	w(uint32(elf.PT_LOAD))
	w(uint32(elf.PF_R | elf.PF_X))
	w(uint64(0))    // offset
	w(uint64(base)) // vaddr
	w(uint64(base)) // paddr
	w(total)        // filesz
	w(total)        // memsz
	w(uint64(0x1000))
	b.Write(code)
	return b.Bytes()
}

// probeBinary returns the probe program for this machine and the command
// that runs it: the built-in one on x86-64, else the host's static busybox
// (Debian's busybox-static), else errNoProbe.
func probeBinary() (bin []byte, args []string, err error) {
	if runtime.GOARCH == "amd64" {
		return staticELF(probeAMD64), []string{"/probe"}, nil
	}
	f, err := elf.Open("/bin/busybox")
	if err != nil {
		return nil, nil, fmt.Errorf("%w (%s): install busybox-static", errNoProbe, runtime.GOARCH)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return nil, nil, fmt.Errorf("%w (%s): /bin/busybox is not static; install busybox-static", errNoProbe, runtime.GOARCH)
		}
	}
	b, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return nil, nil, err
	}
	return b, []string{"/probe", "echo", "ok"}, nil
}

// ProbeImage returns the probe image, a docker-archive tarball with the
// probe program at /probe, and the command that makes it print "ok".
func ProbeImage() (tarball []byte, args []string, err error) {
	bin, args, err := probeBinary()
	if err != nil {
		return nil, nil, err
	}
	epoch := time.Unix(0, 0).UTC()
	tarOf := func(files []tar.Header, data map[string][]byte) []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, h := range files {
			h.ModTime, h.Format = epoch, tar.FormatPAX
			h.Size = int64(len(data[h.Name]))
			tw.WriteHeader(&h)
			tw.Write(data[h.Name])
		}
		tw.Close()
		return buf.Bytes()
	}
	var files []tar.Header
	for _, d := range []string{"dev/", "etc/", "in/", "out/", "proc/", "sys/", "tmp/"} {
		files = append(files, tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755})
	}
	files = append(files, tar.Header{Name: "probe", Typeflag: tar.TypeReg, Mode: 0o755})
	layer := tarOf(files, map[string][]byte{"probe": bin})
	sum := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	cfg, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH, "os": "linux", "created": epoch.Format(time.RFC3339),
		"config": map[string]any{"Cmd": args, "WorkingDir": "/"},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + sum(layer)}},
	})
	if err != nil {
		return nil, nil, err
	}
	manifest, err := json.Marshal([]map[string]any{{
		"Config": sum(cfg) + ".json", "RepoTags": []string{}, "Layers": []string{sum(layer) + "/layer.tar"},
	}})
	if err != nil {
		return nil, nil, err
	}
	tb := tarOf([]tar.Header{
		{Name: sum(layer) + "/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: sum(layer) + "/layer.tar", Typeflag: tar.TypeReg, Mode: 0o644},
		{Name: sum(cfg) + ".json", Typeflag: tar.TypeReg, Mode: 0o644},
		{Name: "manifest.json", Typeflag: tar.TypeReg, Mode: 0o644},
	}, map[string][]byte{sum(layer) + "/layer.tar": layer, sum(cfg) + ".json": cfg, "manifest.json": manifest})
	return tb, args, nil
}

// Probe runs a real job under runtime ("" for the configured one) with this
// Sandbox's settings (user namespace, seccomp, limits, mounts): the probe
// image prints "ok" and exits 0. It returns why it did not, with the
// runtime's own words; the probe image stays in the cache (a few hundred
// bytes).
func (s *Sandbox) Probe(ctx context.Context, runtime string) error {
	return s.probe(ctx, runtime, s.UserNS())
}

func (s *Sandbox) probe(ctx context.Context, runtime string, userns bool) error {
	tb, args, err := ProbeImage()
	if err != nil {
		return err
	}
	img, err := s.ImportImage(ctx, bytes.NewReader(tb), "")
	if err != nil {
		return fmt.Errorf("probe image: %w", err)
	}
	var out, errOut bytes.Buffer
	res, err := s.run(ctx, Job{
		ID: "probe", Image: img.Name, Args: args, Runtime: runtime, Stdout: &out, Stderr: &errOut,
		Limits:   Limits{CPUMillis: 100, MemoryBytes: 32 << 20, WallClock: 30 * time.Second},
		noUserNS: !userns,
	})
	if err != nil {
		return err
	}
	if res.Reason != ReasonExited || res.ExitCode != 0 || out.String() != "ok\n" {
		return fmt.Errorf("probe job: %s, exit %d, stdout %q, stderr %q", res.Reason, res.ExitCode, out.String(), strings.TrimSpace(errOut.String()))
	}
	return nil
}

// ReprobeDelays are the waits before each later probe of a runtime whose
// probe at start ran out of its time (Config.ProbeTimeout): half of it,
// then once, twice, five and ten times it (30 s to 10 min by default).
func ReprobeDelays(probeTimeout time.Duration) []time.Duration {
	return []time.Duration{probeTimeout / 2, probeTimeout, 2 * probeTimeout, 5 * probeTimeout, 10 * probeTimeout}
}

// ProbeTimeout is the time of each runtime's probe job (Config.ProbeTimeout).
func (s *Sandbox) ProbeTimeout() time.Duration { return s.cfg.ProbeTimeout }

// ProbeRuntimes runs the probe job under each of the runtimes named
// (Runtimes when none) and returns those that ran it, and why each other one
// did not. In userns "auto", a runtime that fails only with the user
// namespace remap turns the remap off for every job, with a warning: the
// host cannot give jobs a remapped root (see Probe for the fix), and
// running them without is what "auto" means.
func (s *Sandbox) ProbeRuntimes(ctx context.Context, names ...string) (ok []string, failed map[string]error) {
	if len(names) == 0 {
		names = Runtimes
	}
	failed = map[string]error{}
	for _, rt := range names {
		pctx, cancel := context.WithTimeout(ctx, s.cfg.ProbeTimeout)
		err := s.Probe(pctx, rt)
		if err != nil && s.UserNS() && s.cfg.UserNS == "auto" && remapsUsers(rt) && !errors.Is(err, ErrRuntimeUnavailable) {
			if s.probe(pctx, rt, false) == nil {
				s.log.Warn("userns auto: jobs fail with the user namespace remap; running them without it (sandbox.userns: off to silence, or fix the host: see `blackbox doctor`)",
					"runtime", rt, "err", err)
				s.mu.Lock()
				s.userns = false
				s.mu.Unlock()
				err = nil
			}
		}
		cancel()
		if err != nil {
			failed[rt] = err
			continue
		}
		ok = append(ok, rt)
	}
	return ok, failed
}
