//go:build integration

package main

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/offer"
)

// The buyer's side of the market, through the real CLI: what `submit`
// ships, what it refuses before money moves, and what the buyer's node
// records about the sellers it dealt with.

// TestSubmitInputs: `blackbox submit --input FILE...` ships the files to
// the seller, the job reads them at /in (busybox sha256sum /in/*), and the
// hashes it prints are those of the files. Then `blackbox reputation` on
// the buyer, whose book now holds its own observation of the seller,
// shows it through the daemon's API.
func TestSubmitInputs(t *testing.T) {
	t.Parallel()
	m := newMarket(t)
	seller := m.daemon(sellerEnv())
	buyer := m.daemon(buyerEnv, "--bootstrap", seller.bootAddr())
	sellerID := seller.peerID()
	m.fund(buyer.proc, 1_000_000)
	m.waitMarket(buyer, 1)
	work := t.TempDir()
	image := busybox(t, work)

	files := map[string][]byte{
		"a.txt":   []byte("the first input\n"),
		"b.bin":   make([]byte, 200_000), // more than one 64 KiB frame
		"c d.txt": []byte("a name with a space"),
	}
	for i := range files["b.bin"] {
		files["b.bin"][i] = byte(i * 7)
	}
	var flags []string
	for name, b := range files {
		p := filepath.Join(work, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		flags = append(flags, "--input", p)
	}
	out := filepath.Join(work, "res")
	j := submit(t, buyer, image, out, append(flags, jobFlags...), "sh", "-c", "cd /in && sha256sum *")
	if j.State != contract.JobDone || j.ExitCode != 0 {
		t.Fatalf("job %s: %s exit %d %q", j.ID, j.State, j.ExitCode, j.Error)
	}
	stdout, err := os.ReadFile(filepath.Join(out, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(stdout)), "\n") {
		sum, name, ok := strings.Cut(line, "  ")
		if !ok {
			t.Fatalf("sha256sum printed %q", stdout)
		}
		got[name] = sum
	}
	for name, b := range files {
		want := sha256.Sum256(b)
		if got[name] != hex.EncodeToString(want[:]) {
			t.Errorf("/in/%s hashes to %q in the job; the file is %x", name, got[name], want)
		}
	}
	if len(got) != len(files) {
		t.Errorf("the job saw %d files in /in, want %d: %q", len(got), len(files), stdout)
	}

	// The buyer's own evidence about the seller is listed and explained
	// (issue 9, 8a: the "self" source has no peer ID).
	o, err := buyer.cli("reputation")
	if err != nil || !strings.Contains(o, sellerID) {
		t.Fatalf("reputation: %v\n%s", err, o)
	}
	o, err = buyer.cli("reputation", sellerID)
	if err != nil || !strings.Contains(o, "self") || !strings.Contains(o, "completed 1.0") {
		t.Fatalf("reputation %s: %v\n%s", sellerID, err, o)
	}
	o, err = buyer.cli("reputation", "--json", sellerID)
	if err != nil || !strings.Contains(o, `"from": "self"`) {
		t.Fatalf("reputation --json %s: %v\n%s", sellerID, err, o)
	}
}

// TestSubmitChecksBeforePaying: what the buyer can check itself fails
// `blackbox submit` at once with what to do, before a contract, a channel
// or a payment (issue 9, 8b): a file that is not an image, a directory as
// the image, missing or non-regular inputs, an empty wallet. Through the
// API, which skips the CLI's checks, the node refuses the empty wallet
// (issue 13: before anything is agreed) and the file that is not an image
// itself. Then two jobs whose image only the seller can tell is bad. The
// seller's reason reaches the buyer, nothing is paid, and the honest seller
// is not blamed: the next real job runs on it (issue 9, bug 8: two bad
// images and a funding failure used to block it).
func TestSubmitChecksBeforePaying(t *testing.T) {
	t.Parallel()
	m := newMarket(t)
	seller := m.daemon(sellerEnv())
	buyer := m.daemon(buyerEnv, "--bootstrap", seller.bootAddr())
	sellerID := seller.peerID()
	m.waitMarket(buyer, 1)
	work := t.TempDir()
	image := busybox(t, work)
	notatar := filepath.Join(work, "notatar.tar")
	if err := os.WriteFile(notatar, []byte(strings.Repeat("this is not a tarball\n", 100)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"not a tarball", []string{"--image", notatar}, "not a valid tar archive"},
		{"a directory", []string{"--image", work}, "is a directory"},
		{"a missing file", []string{"--image", "./missing.tar"}, "no such file"},
		{"a missing input", []string{"--image", image, "--input", filepath.Join(work, "missing")}, "no such file"},
		{"a directory as input", []string{"--image", image, "--input", work}, "not a regular file"},
		{"an empty wallet", append([]string{"--image", image}, jobFlags...), "the wallet has 0 sat spendable; this job needs about"},
	} {
		out, err := buyer.cli(append(append([]string{"submit"}, tc.args...), "--", "true")...)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("submit with %s: %v, %q; want an error saying %q", tc.name, err, out, tc.want)
		}
	}
	nothingHappened := func(when string) {
		t.Helper()
		jobs, err := buyer.api().Jobs(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range jobs {
			if j.Paid != 0 {
				t.Fatalf("%s: job %s paid %d sat: %+v", when, j.ID, j.Paid, j.Attempts)
			}
		}
		cs, err := seller.api().Contracts(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range cs.Contracts {
			if r.Paid != 0 || r.State == contract.StateRunning {
				t.Fatalf("%s: the seller's contract %s is %s, paid %d", when, r.ID, r.State, r.Paid)
			}
		}
		if o, err := buyer.cli("reputation", sellerID, "--json"); err != nil || !strings.Contains(o, `"evidence": 0,`) {
			t.Fatalf("%s: the buyer holds evidence against the seller: %v\n%s", when, err, o)
		}
	}
	nothingHappened("after the refused submits")
	if jobs, _ := buyer.api().Jobs(context.Background()); len(jobs) != 0 {
		t.Fatalf("refused submits made %d jobs", len(jobs))
	}

	// Through the API, which does not run the CLI's checks. First the
	// empty wallet: the node refuses the job before anything is agreed.
	blobs := contract.DirBlobs(filepath.Join(buyer.dir, "blobs"))
	digest := func(path string) (string, uint64) {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		d, n, err := blobs.Add(f)
		if err != nil {
			t.Fatal(err)
		}
		return d, uint64(n)
	}
	{
		d, n := digest(image)
		req := contract.Request{Image: d, ImageSize: n, Command: []string{"true"}, Duration: time.Minute, MaxPrice: 10000,
			Resources: offer.Resources{CPUMillis: 1000, MemoryBytes: 128 << 20}}
		_, err := buyer.api().Submit(context.Background(), req)
		if !errors.Is(err, api.ErrRefused) || !strings.Contains(err.Error(), "sat spendable") {
			t.Fatalf("API submit with an empty wallet: %v", err)
		}
	}
	nothingHappened("after a refused API submit")
	// The node runs the image check too.
	d, n := digest(notatar)
	_, err := buyer.api().Submit(context.Background(), contract.Request{Image: d, ImageSize: n, Command: []string{"true"}, Duration: time.Minute,
		MaxPrice: 10000, Resources: offer.Resources{CPUMillis: 1000, MemoryBytes: 128 << 20}})
	if err == nil || !strings.Contains(err.Error(), "not a valid tar archive") {
		t.Fatalf("API submit of a file that is not an image: %v", err)
	}

	// An image only the seller can tell is bad (its manifest does not
	// parse): the seller refuses it, and says why.
	m.fund(buyer.proc, 1_000_000)
	imposter := filepath.Join(work, "imposter.tar")
	writeTar(t, imposter, map[string]string{"manifest.json": "this is not JSON", "layer.tar": "nor is this a layer"})
	for i := range 2 {
		j := submit(t, buyer, imposter, filepath.Join(work, "bad"), jobFlags, "true")
		if j.State != contract.JobFailed || len(j.Attempts) != 1 || j.Paid != 0 || !strings.Contains(j.Error, "seller refused (bad_image)") {
			t.Fatalf("bad image %d: %s after %d attempts, paid %d: %q", i, j.State, len(j.Attempts), j.Paid, j.Error)
		}
		t.Logf("bad image %d: %s", i, j.Error)
		nothingHappened("after a bad image")
	}

	// The honest seller still gets the next job.
	j := submit(t, buyer, image, filepath.Join(work, "res"), jobFlags, "sh", "-c", "echo fine")
	if j.State != contract.JobDone || j.Seller.String() != sellerID {
		t.Fatalf("the job after the buyer's failures: %s on %s: %q", j.State, j.Seller, j.Error)
	}
	o, err := buyer.cli("reputation", sellerID)
	if err != nil || !strings.Contains(o, "status    ok") || !strings.Contains(o, "completed 1.0") || strings.Contains(o, "failed") {
		t.Fatalf("reputation of the honest seller: %v\n%s", err, o)
	}
}

// TestMaxPriceHoldsAcrossAttempts: --max-price is what the whole job may
// cost, start fees included (issue 9, bug 3). A contract costs 7000 sat
// (1000 to start, 30 intervals of 200); the job may cost 7500, and runs
// 55s. Its seller is killed (kill -9) after a few intervals; run again from
// the start on the other seller it would cost about 6600 more (7000 at
// most), over what is left, so the job ends there without spending it. The buyer's book now blocks the vanished seller (one observation for
// the contract, bug 7); once it is back, `submit` says it skipped it and
// how to lift the block, and `blackbox reputation forget` does (bug 8).
func TestMaxPriceHoldsAcrossAttempts(t *testing.T) {
	t.Parallel()
	m := newMarket(t)
	regions := map[*daemon]string{}
	s1 := m.daemon(sellerEnv(), "--region", "eu")
	s2 := m.daemon(sellerEnv(), "--region", "us", "--bootstrap", s1.bootAddr())
	regions[s1], regions[s2] = "eu", "us"
	buyer := m.daemon(append([]string{"BLACKBOX_CONTRACT_BUSY_WAIT=4s"}, buyerEnv...), "--bootstrap", s1.bootAddr())
	m.fund(buyer.proc, 1_000_000)
	m.waitMarket(buyer, 2)
	image := busybox(t, t.TempDir())

	const maxPrice = 7500
	flags := []string{"--cpus", "1", "--memory", "128MiB", "--time", "1m", "--max-price", strconv.Itoa(maxPrice)}
	id, j := runningJob(t, buyer, image, flags, "sh", "-c", "sleep 55; echo done")
	victim := sellerOf(t, j.Seller.String(), s1, s2)
	victimID, cid := victim.peerID(), j.ContractID
	victim.kill()
	j = waitJob(t, buyer, id, 90*time.Second, "ends", ended)
	t.Logf("job %s after the kill: %s, paid %d over %d attempt(s): %s", id, j.State, j.Paid, len(j.Attempts), j.Error)
	if j.Paid > maxPrice {
		t.Fatalf("the job paid %d sat with --max-price %d: attempts %+v", j.Paid, maxPrice, j.Attempts)
	}
	if j.State != contract.JobFailed || len(j.Attempts) != 1 || j.Attempts[0].ContractID != cid || !strings.Contains(j.Error, "max price") {
		t.Fatalf("job %s after %d attempts: %q; want failed, the budget left short of another contract", j.State, len(j.Attempts), j.Error)
	}

	// One observation for the one contract: the seller vanished.
	var sc struct {
		Blocked bool `json:"blocked"`
		Sources []struct {
			From     string             `json:"from"`
			Outcomes map[string]float64 `json:"outcomes"`
		} `json:"sources"`
	}
	o, err := buyer.cli("reputation", victimID, "--json")
	if err != nil || json.Unmarshal([]byte(o), &sc) != nil {
		t.Fatalf("reputation --json: %v\n%s", err, o)
	}
	if !sc.Blocked || len(sc.Sources) != 1 || len(sc.Sources[0].Outcomes) != 1 || sc.Sources[0].Outcomes["abandoned"] < 0.99 || sc.Sources[0].Outcomes["abandoned"] > 1.01 {
		t.Fatalf("the buyer's view of the vanished seller: %s", o)
	}

	// Back on its data dir, it is on the market, and blocked by this buyer.
	victim.start()
	m.waitMarket(buyer, 2)
	// submit refuses it at once (issue 13), saying so.
	only := append(slices.Clone(jobFlags), "--region", regions[victim])
	events, err := submitEvents(t, buyer, image, filepath.Join(t.TempDir(), "res"), only, "sh", "-c", "echo again")
	if e := events[len(events)-1]; err == nil || e.Event != "error" || e.Code != 1 || !strings.Contains(e.Message, "skipped 1 seller(s) you have blocked: "+victimID) ||
		!strings.Contains(e.Message, "blackbox reputation forget PEER") {
		t.Fatalf("a job only the blocked seller could run: %v: %+v", err, e)
	}
	if o, err := buyer.cli("reputation", "forget", victimID); err != nil || !strings.Contains(o, "now ok") {
		t.Fatalf("reputation forget: %v\n%s", err, o)
	}
	j = submit(t, buyer, image, filepath.Join(t.TempDir(), "res"), only, "sh", "-c", "echo again")
	if j.State != contract.JobDone || j.Seller.String() != victimID {
		t.Fatalf("after forget: %s on %s: %q", j.State, j.Seller, j.Error)
	}
}

// writeTar writes a tarball of files (name → content) to path.
func writeTar(t *testing.T, path string, files map[string]string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}
