package sandbox

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func TestEndFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if _, err := readEnd(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing end file: %v", err)
	}
	in := &Result{ExitCode: 137, Reason: ReasonTimeout, CPUTime: 1500 * time.Millisecond, PeakMemory: 3 << 20, OOMKills: 1, Wall: 2 * time.Second}
	ended := time.Date(2026, 12, 2, 6, 0, 0, 5, time.UTC)
	if err := writeEnd(dir, in, ended); err != nil {
		t.Fatal(err)
	}
	e, err := readEnd(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out Result
	e.apply(&out)
	if out != *in || !e.Ended.Equal(ended) {
		t.Fatalf("read back %+v ended %s, want %+v ended %s", out, e.Ended, *in, ended)
	}
}

func TestDecodeEndRefusesBadRecords(t *testing.T) {
	good := `{"version":1,"exit_code":0,"reason":"exited","cpu_ns":1,"peak_memory_bytes":1,"oom_kills":0,"wall_ns":1,"ended":"2026-12-02T06:00:00Z"}`
	if _, err := decodeEnd([]byte(good)); err != nil {
		t.Fatalf("good record: %v", err)
	}
	for name, b := range map[string]string{
		"empty":     ``,
		"truncated": good[:len(good)/2],
		"garbage":   "\x00\x01not json",
		"trailing":  good + `{}`,
		"version":   strings.Replace(good, `"version":1`, `"version":2`, 1),
		"reason":    strings.Replace(good, `"exited"`, `"error"`, 1),
		"exit":      strings.Replace(good, `"exit_code":0`, `"exit_code":-7`, 1),
		"negative":  strings.Replace(good, `"cpu_ns":1`, `"cpu_ns":-1`, 1),
		"no end":    strings.Replace(good, `"2026-12-02T06:00:00Z"`, `"0001-01-01T00:00:00Z"`, 1),
		"unknown":   strings.Replace(good, `{`, `{"x":1,`, 1),
		"too large": good + strings.Repeat(" ", maxEndFile),
	} {
		if e, err := decodeEnd([]byte(b)); err == nil {
			t.Errorf("%s: accepted %+v", name, e)
		}
	}
}

// FuzzDecodeEnd: no input panics, and what is accepted is a valid record.
func FuzzDecodeEnd(f *testing.F) {
	f.Add([]byte(`{"version":1,"exit_code":3,"reason":"exited","cpu_ns":1,"peak_memory_bytes":1,"oom_kills":0,"wall_ns":1,"ended":"2026-12-02T06:00:00Z"}`))
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeEnd(b)
		if err != nil {
			return
		}
		if e.Version != endVersion || e.ExitCode < -1 || e.CPUNanos < 0 || e.WallNanos < 0 || e.Ended.IsZero() {
			t.Fatalf("accepted %+v", e)
		}
	})
}

// BenchmarkWriteEnd is the one durable write a detachable job adds, on
// the disk of BLACKBOX_BENCH_DIR (default /var/tmp; the state directory's
// disk is what counts).
func BenchmarkWriteEnd(b *testing.B) {
	base := os.Getenv("BLACKBOX_BENCH_DIR")
	if base == "" {
		base = "/var/tmp"
	}
	dir, err := os.MkdirTemp(base, "bb-endbench-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	res := &Result{ExitCode: 0, Reason: ReasonExited, CPUTime: time.Millisecond, PeakMemory: 1 << 20, Wall: time.Millisecond}
	for b.Loop() {
		if err := writeEnd(dir, res, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}
