package cli

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/internal/node"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/blackbox-market/blackbox/pkg/quantity"
	"github.com/blackbox-market/blackbox/pkg/sandbox/imagetar"
	"github.com/spf13/cobra"
)

// submitFlags are `blackbox submit`'s flags, in the spirit of docker run.
type submitFlags struct {
	image, cpus, memory, disk, region, runtime string
	duration                                   time.Duration
	maxPrice                                   uint64
	limit                                      int
	minReputation                              float64
	env, inputs                                []string
	out                                        string
	detach, asJSON, deterministic              bool
	escrow                                     string
	serviceFlags
}

func newSubmitCmd(a *App) *cobra.Command {
	var f submitFlags
	c := &cobra.Command{
		Use:   "submit --image FILE|REF [flags] -- CMD [ARG...]",
		Short: "Run a job on the market: find sellers, agree a contract, pay as it runs, bring the results home",
		Long: `Run CMD in IMAGE on the cheapest suitable seller, like docker run.

The running node (blackbox serve) discovers sellers, negotiates a contract
within --max-price (sats for the whole job), opens or reuses a payment channel,
ships the image (a tarball, checked by its sha256) and inputs, pays each
billing interval in advance, and brings back stdout, stderr, /out and the
seller's signed receipt into --out.

Before anything is negotiated the node looks at the market and the wallet:
a job no seller offers (--max-price below the cheapest, more --cpus or
--memory than any offer, a --time, --runtime or --region no seller has) or
one the wallet cannot pay for is refused at once, saying what would work.

--json prints one JSON event per line (checking, submitted, searching,
negotiating, funding, transferring, running, results, log, and last done or
error); the README's "Scripting submit" lists their fields.

Exit codes: the job's own code when it ran (0: success); 1 when blackbox
failed (the message says why); 2 for a usage error (a bad flag or value);
125 when the job did not run to its end (failed or cancelled: 'blackbox job
ID' says why); 130 when ctrl-c detached (the job goes on).

--deterministic marks a job whose stdout and /out are byte-for-byte identical
wherever it runs. After it is done (its results and exit code are final), the
node may spot-check the seller: run the same job once more on another seller
and, if the outputs differ, a third time; the majority decides, and a seller
whose output disagreed loses reputation. Those re-runs are paid at your cost,
each within --max-price (up to twice more than the job itself), run in the
background and are shown under "spot check" in 'blackbox job'. Do not use it
for jobs with timestamps, randomness or other output that varies.

` + quantity.SizeHelp,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			svc, err := f.toService(cmd.Flags())
			if err != nil {
				return err
			}
			if svc != nil {
				if !cmd.Flags().Changed("time") {
					f.duration = contract.DefaultServiceTerm
				}
				req, err := a.request(f, args)
				if err != nil {
					return err
				}
				req.Service = svc
				if err := req.Validate(); err != nil {
					return usagef("%s", strings.TrimPrefix(err.Error(), contract.ErrInvalid.Error()+": "))
				}
				return a.submitService(cmd.Context(), req, f.asJSON)
			}
			return a.submit(cmd.Context(), f, args)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.image, "image", "", "image tarball (docker-archive or OCI layout) or a reference the seller pulls (required)")
	fl.StringVar(&f.cpus, "cpus", "1", "cores (e.g. 1, 0.5, 500m)")
	fl.StringVar(&f.memory, "memory", "256MiB", "memory, e.g. 512Mi (2^20 bytes) or 512M (10^6 bytes)")
	fl.StringVar(&f.disk, "disk", "256MiB", "scratch disk for /tmp and /out, a size like --memory")
	fl.DurationVar(&f.duration, "time", 2*time.Minute, "how long the job may run (the contract's length)")
	fl.Uint64Var(&f.maxPrice, "max-price", 1000, "the most to pay for the whole job, in sats")
	fl.StringArrayVarP(&f.env, "env", "e", nil, "environment variable K=V (repeatable)")
	fl.StringArrayVar(&f.inputs, "input", nil, "input file the job reads at /in/NAME (repeatable)")
	fl.StringVar(&f.region, "region", "", "prefer sellers in this region")
	fl.IntVar(&f.limit, "limit", 0, "stop the offer lookup at this many matching offers (the first found; 0: every offer it can find)")
	fl.StringVar(&f.runtime, "runtime", "", "require this sandbox runtime (runc, crun, runsc); only sellers offering it are asked")
	fl.Float64Var(&f.minReputation, "min-reputation", 0, "skip sellers scored below this (0..1)")
	fl.StringVarP(&f.out, "out", "o", "", "directory for the results (default ./blackbox-results/JOB_ID)")
	fl.BoolVar(&f.deterministic, "deterministic", false, "the job's output is identical on every seller: it may be re-run once or twice on other sellers, at your cost, to check the seller (spot check)")
	fl.StringVar(&f.escrow, "escrow", "", "pay on delivery from a 2-of-3 escrow with this arbiter (a peer ID with arbiter.enabled) instead of per interval")
	fl.BoolVarP(&f.detach, "detach", "d", false, "print the job ID and return at once")
	fl.BoolVar(&f.asJSON, "json", false, "print JSON events, one per line, as the job goes (the last: done or error)")
	addServiceFlags(fl, &f.serviceFlags)
	_ = c.MarkFlagRequired("image")
	return c
}

// request turns flags into a contract request, adding the image tarball and
// inputs to the node's blob store.
func (a *App) request(f submitFlags, args []string) (contract.Request, error) {
	req := contract.Request{Command: args, Env: f.env, Duration: f.duration, MaxPrice: f.maxPrice,
		MinReputation: f.minReputation, Region: f.region, Runtime: f.runtime, Deterministic: f.deterministic, Escrow: f.escrow,
		Limit: f.limit}
	// The flags are checked one by one, in their own words, before the
	// request as a whole (contract.Request.Validate).
	if f.duration <= 0 || f.duration > contract.MaxDuration {
		return req, usagef("--time %s: want a length above 0 and up to %s, like 2m or 1h", f.duration, contract.MaxDuration)
	}
	if f.limit < 0 || f.limit > contract.MaxLimit {
		return req, usagef("--limit %d: want 0 (no limit) up to %d offers", f.limit, contract.MaxLimit)
	}
	if !(f.minReputation >= 0 && f.minReputation <= 1) {
		return req, usagef("--min-reputation %v: want a score from 0 to 1", f.minReputation)
	}
	if len(f.region) > offer.MaxRegionLen {
		return req, usagef("--region: at most %d characters", offer.MaxRegionLen)
	}
	cpu, err := quantity.ParseCPU(f.cpus)
	if err != nil || cpu <= 0 {
		return req, usagef("--cpus %q: want a positive number of cores like 1 or 500m", f.cpus)
	}
	mem, err := quantity.ParseSize(f.memory)
	if err != nil || mem <= 0 {
		return req, usagef("--memory %q: want a positive size like 256MiB", f.memory)
	}
	disk, err := quantity.ParseSize(f.disk)
	if err != nil || disk < 0 {
		return req, usagef("--disk %q: want a size like 256MiB", f.disk)
	}
	req.Resources.CPUMillis, req.Resources.MemoryBytes, req.Resources.DiskBytes = uint64(cpu), uint64(mem), uint64(disk)
	for _, e := range f.env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return req, usagef("--env %q: want KEY=VALUE", e)
		}
	}
	blobs := contract.DirBlobs(node.BlobDir(a.dataDir))
	add := func(path string, image bool) (string, int64, error) { return addCached(a.dataDir, blobs, path, image) }
	// What can be checked here is checked before any money moves: a
	// seller would refuse it after the channel is funded.
	switch st, err := os.Stat(f.image); {
	case err == nil && st.IsDir():
		return req, fmt.Errorf("--image %s is a directory: pass an image tarball (`docker save IMAGE -o FILE.tar`, or a tar of an OCI layout) or a registry reference", f.image)
	case err == nil && !st.Mode().IsRegular():
		return req, fmt.Errorf("--image %s is not a regular file", f.image)
	case err == nil:
		// An image file unchanged since a submit checked it is not read
		// again.
		if _, _, ok := cachedDigest(a.dataDir, blobs, f.image, true); !ok {
			if err := checkImage(f.image); err != nil {
				return req, err
			}
		}
		digest, size, err := add(f.image, true)
		if err != nil {
			return req, fmt.Errorf("--image %s: %w", f.image, err)
		}
		req.Image, req.ImageSize = digest, uint64(size)
	case !errors.Is(err, fs.ErrNotExist):
		return req, fmt.Errorf("--image %s: %w", f.image, err)
	case looksLikeReference(f.image):
		req.Image = f.image // a reference the seller pulls
	default:
		return req, errNoImage(f.image)
	}
	names := map[string]string{}
	for _, in := range f.inputs {
		st, err := os.Stat(in)
		if err != nil {
			return req, fmt.Errorf("--input %s: %w", in, err)
		}
		if !st.Mode().IsRegular() {
			return req, fmt.Errorf("--input %s is not a regular file (a directory? pass its files, or a tar of it)", in)
		}
		name := filepath.Base(in)
		if prev, ok := names[name]; ok {
			return req, fmt.Errorf("--input %s and --input %s would both be /in/%s", prev, in, name)
		}
		names[name] = in
		digest, size, err := add(in, false)
		if err != nil {
			return req, fmt.Errorf("--input %s: %w", in, err)
		}
		req.Inputs = append(req.Inputs, contract.Input{Name: name, SHA256: digest, Size: uint64(size)})
	}
	if err := req.Validate(); err != nil {
		return req, usagef("%s", strings.TrimPrefix(err.Error(), contract.ErrInvalid.Error()+": "))
	}
	return req, nil
}

// checkImage reads an image tarball through the same checks a seller
// applies before it imports one (pkg/sandbox/imagetar).
func checkImage(path string) error {
	fh, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("--image %s: %w", path, err)
	}
	defer fh.Close()
	if err := imagetar.Validate(fh, math.MaxInt64); err != nil {
		return fmt.Errorf("--image %s: %w (an image is a tarball from `docker save` or of an OCI layout)", path, err)
	}
	return nil
}

// errNoImage is the error of an --image that names no file and is not an
// image reference either (a typo in a path, most likely).
func errNoImage(image string) error {
	return fmt.Errorf("--image %q: no such file (and not an image reference like docker.io/library/busybox:1.36)", image)
}

// looksLikeReference says whether s can be an image reference a seller
// pulls (registry/name[:tag][@digest]) rather than a path that does not
// exist.
func looksLikeReference(s string) bool {
	if !strings.ContainsAny(s, "/:") || strings.HasPrefix(s, ".") || strings.HasPrefix(s, "/") || strings.HasPrefix(s, "~") {
		return false
	}
	for _, ext := range []string{".tar", ".tgz", ".tar.gz", ".oci"} {
		if strings.HasSuffix(s, ext) {
			return false
		}
	}
	return true
}

func (a *App) submit(ctx context.Context, f submitFlags, args []string) error {
	var events *eventSink
	if f.asJSON {
		events = newEventSink(a.Stdout)
	}
	id, err := a.submitJob(ctx, f, args, events)
	if err != nil && events != nil {
		var ee *ExitError
		if !errors.As(err, &ee) {
			events.fail(id, err)
		}
	}
	return err
}

// submitJob submits and, unless detached, follows the job to its end,
// telling events (when set) or the terminal what happens.
func (a *App) submitJob(ctx context.Context, f submitFlags, args []string, events *eventSink) (string, error) {
	req, err := a.request(f, args)
	if err != nil {
		return "", err
	}
	c := a.client()
	// The node looks at the market and the wallet first: a job no seller
	// offers, or one the wallet cannot pay for, is refused at once, saying
	// what would work.
	if events != nil {
		events.emit(Event{Event: "checking"})
	} else if !f.detach {
		fmt.Fprintln(a.Stderr, "looking at the market and the wallet…")
	}
	id, err := c.Submit(ctx, req)
	if err != nil {
		return "", err
	}
	if f.detach {
		if events != nil {
			events.emit(Event{Event: "submitted", Job: id})
		} else {
			fmt.Fprintln(a.Stdout, id)
		}
		return id, nil
	}
	var s sink = humanSink{w: a.Stderr, stdout: a.Stdout, stderr: a.Stderr}
	streams := []string{"stdout"}
	if events != nil {
		events.emit(Event{Event: "submitted", Job: id})
		s, streams = events, []string{"stdout", "stderr"}
	} else {
		fmt.Fprintf(a.Stderr, "job %s submitted (ctrl-c detaches; `blackbox cancel %s` stops it)\n", id, id)
	}
	job, err := a.follow(ctx, id, s, streams...)
	if err != nil {
		if ctx.Err() != nil && events == nil {
			fmt.Fprintf(a.Stderr, "detached; the job goes on: `blackbox job %s`\n", id)
		}
		return id, err
	}
	out := f.out
	if out == "" {
		out = filepath.Join("blackbox-results", id)
	}
	if job.ResultDir != "" {
		if err := collectResults(job, out); err != nil {
			return id, err
		}
	}
	if events != nil {
		events.done(job, out)
	} else {
		summarize(a.Stderr, job, out)
	}
	return id, jobExit(job)
}

// jobError says a job lookup failed in the user's words.
func (a *App) jobError(id string, err error) error {
	if errors.Is(err, api.ErrNotFound) {
		return fmt.Errorf("no job %s on this node: `blackbox jobs` lists them", id)
	}
	return err
}

func jobDone(s contract.JobState) bool {
	switch s {
	case contract.JobDone, contract.JobFailed, contract.JobCancelled:
		return true
	}
	return false
}

func shortID(s string) string {
	if len(s) > 16 {
		return s[:8] + "…" + s[len(s)-6:]
	}
	return s
}

// collectResults copies a finished job's stdout, stderr and receipt into dir
// and unpacks out.tar into dir/out.
func collectResults(job *contract.JobStatus, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("results dir: %w", err)
	}
	for _, name := range []string{"stdout", "stderr", "receipt", "out.tar"} {
		src := filepath.Join(job.ResultDir, name)
		if _, err := os.Stat(src); err != nil {
			continue
		}
		if err := copyFile(src, filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	if t, err := os.Open(filepath.Join(job.ResultDir, "out.tar")); err == nil {
		defer t.Close()
		if err := untar(t, filepath.Join(dir, "out")); err != nil {
			return fmt.Errorf("unpack out.tar: %w", err)
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// untar unpacks regular files and directories of a job's /out into dir,
// refusing any entry that would land outside it: the tar comes from a
// stranger.
func untar(r io.Reader, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(strings.TrimPrefix(h.Name, "out/"))
		if name == "." || name == "out" {
			continue
		}
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("entry %q escapes the results dir", h.Name)
		}
		target := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(target, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, tr); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
		default:
			// Links and devices from a stranger are not recreated.
		}
	}
}

func summarize(w io.Writer, job *contract.JobStatus, out string) {
	fmt.Fprintf(w, "job %s %s", job.ID, job.State)
	if job.Receipt != nil {
		fmt.Fprintf(w, ": exit %d (%s), cpu %s, peak memory %s, wall %s",
			job.Receipt.ExitCode, cleanCell(job.Receipt.Reason), job.Receipt.Usage.CPUTime.Round(time.Millisecond),
			quantity.FormatSize(int64(job.Receipt.Usage.PeakMemory)), job.Receipt.Usage.Wall.Round(time.Millisecond))
	}
	if job.Error != "" {
		fmt.Fprintf(w, ": %s", cleanCell(job.Error)) // a seller's words, perhaps
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "cost: %d sat paid over %d attempt(s)", job.Paid, len(job.Attempts))
	if fee := startFees(job); fee > 0 {
		fmt.Fprintf(w, ", start fee %d sat included", fee)
	}
	if job.Receipt != nil {
		fmt.Fprintf(w, ", %d billed by the receipt for %d interval(s)", job.Receipt.Billed, job.Receipt.Intervals)
		if r := job.Receipt; r.EgressBytes > 0 {
			fmt.Fprintf(w, " and %s moved (%d sat)", quantity.FormatSize(int64(r.EgressBytes)), r.Egress)
		}
	}
	fmt.Fprintln(w)
	for i, at := range job.Attempts {
		if at.Reason == contract.ReasonUnreachable {
			fmt.Fprintf(w, "attempt %d: seller %s %s: accepted, but no connection could carry the contract (nothing funded, paid or sent); tried the next seller\n",
				i+1, shortID(at.Seller.String()), at.Reason)
		}
	}
	if job.ResultDir != "" {
		fmt.Fprintf(w, "results: %s (stdout, stderr, out/, receipt signed by %s)\n", out, shortID(job.Seller.String()))
	}
}

// startFees is what the job's contracts charged to start, in sats.
func startFees(job *contract.JobStatus) int64 {
	var fee int64
	for _, at := range job.Attempts {
		if at.Paid > 0 {
			fee += at.StartFee
		}
	}
	return fee
}

// jobExit turns a finished job into the process exit code.
func jobExit(job *contract.JobStatus) error {
	switch {
	case job.State == contract.JobDone && job.ExitCode == 0:
		return nil
	case job.State == contract.JobDone:
		return &ExitError{Code: int(job.ExitCode)}
	default:
		return &ExitError{Code: ExitNotRun}
	}
}

func newJobsCmd(a *App) *cobra.Command {
	var (
		asJSON bool
		states []string
	)
	c := &cobra.Command{
		Use:   "jobs",
		Short: "List this node's jobs as a buyer",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			keep, err := stateFilter(states)
			if err != nil {
				return err
			}
			jobs, err := a.client().Jobs(cmd.Context())
			if err != nil {
				return err
			}
			jobs = slices.DeleteFunc(jobs, func(j *contract.JobStatus) bool { return !keep(j.State) })
			if asJSON {
				return writeJSON(a.Stdout, jobs)
			}
			return printJobs(a.Stdout, time.Now(), jobs)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().StringSliceVar(&states, "state", nil, "only jobs in these states: "+strings.Join(jobStates, ", ")+" (repeatable, or comma-separated)")
	return c
}

// jobStates are the states a job can be in, as `jobs --state` takes them.
var jobStates = []string{string(contract.JobSearching), string(contract.JobRunning), string(contract.JobDone),
	string(contract.JobFailed), string(contract.JobCancelled)}

// stateFilter says which jobs --state keeps (all when none is given).
func stateFilter(states []string) (func(contract.JobState) bool, error) {
	want := map[contract.JobState]bool{}
	for _, s := range states {
		s = strings.ToLower(strings.TrimSpace(s))
		if s == "canceled" {
			s = string(contract.JobCancelled)
		}
		if !slices.Contains(jobStates, s) {
			return nil, usagef("--state %q: want one of %s", s, strings.Join(jobStates, ", "))
		}
		want[contract.JobState(s)] = true
	}
	return func(s contract.JobState) bool { return len(want) == 0 || want[s] }, nil
}

func newJobCmd(a *App) *cobra.Command {
	var asJSON, logs, follow bool
	c := &cobra.Command{
		Use:   "job ID",
		Short: "Show one job: state, attempts, cost, receipt, and with --logs its output",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := a.resolveJob(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if follow {
				// The output as it comes, until the job ends; its exit
				// code is submit's.
				j, err := a.follow(cmd.Context(), id, humanSink{stdout: a.Stdout, stderr: a.Stderr}, "stdout", "stderr")
				if err != nil {
					return err
				}
				return jobExit(j)
			}
			j, err := a.client().Job(cmd.Context(), id)
			if err != nil {
				return a.jobError(id, err)
			}
			if asJSON {
				return writeJSON(a.Stdout, j)
			}
			w := newTable(a.Stdout)
			fmt.Fprintf(w, "Job:\t%s\n", j.ID)
			fmt.Fprintf(w, "Created:\t%s (%s)\n", ago(time.Now(), j.Created), j.Created.Local().Format(time.DateTime))
			fmt.Fprintf(w, "State:\t%s %s\n", j.State, j.Phase)
			if j.Funding != nil {
				fmt.Fprintf(w, "Funding:\t%s\n", cleanCell(j.Funding.String()))
			}
			fmt.Fprintf(w, "Command:\t%s\n", strings.Join(j.Request.Command, " "))
			fmt.Fprintf(w, "Image:\t%s\n", j.Request.Image)
			fmt.Fprintf(w, "Paid:\t%s (limit %s)\n", sats(j.Paid), sats(int64(j.Request.MaxPrice)))
			for i, at := range j.Attempts {
				fault := ""
				if at.Fault != contract.FaultNone {
					fault = "[fault: " + at.Fault.String() + "] "
				}
				state := at.State.String()
				if at.Reason != contract.ReasonNone {
					state += " (" + string(at.Reason) + ")"
				}
				fmt.Fprintf(w, "Attempt %d:\t%s contract %s: %s, paid %s %s%s\n", i+1, shortID(at.Seller.String()), shortID(at.ContractID), state, sats(at.Paid), fault, cleanCell(at.Why))
			}
			if j.Receipt != nil {
				r := j.Receipt
				fmt.Fprintf(w, "Receipt:\texit %d (%s), billed %s for %d interval(s), cpu %s, peak memory %s\n",
					r.ExitCode, r.Reason, sats(r.Billed), r.Intervals, r.Usage.CPUTime.Round(time.Millisecond), quantity.FormatSize(int64(r.Usage.PeakMemory)))
				if r.EgressBytes > 0 {
					fmt.Fprintf(w, "Moved:\t%s (image, inputs and outputs), billed %s (in the bill above)\n", quantity.FormatSize(int64(r.EgressBytes)), sats(r.Egress))
				}
				for _, o := range r.Outputs {
					fmt.Fprintf(w, "  %s\t%s\n", o.Name, o.SHA256)
				}
			}
			if sc := j.SpotCheck; sc != nil {
				fmt.Fprintf(w, "Spot check:\t%s %s, paid %s %s\n", sc.State, sc.Verdict, sats(sc.Paid), sc.Error)
				for _, r := range sc.Runs {
					fmt.Fprintf(w, "  %s\tcontract %s output %s\n", shortID(r.Seller.String()), shortID(r.ContractID), shortID(r.Digest))
				}
			}
			printService(w, j.Service)
			if j.Error != "" {
				fmt.Fprintf(w, "Error:\t%s\n", j.Error)
			}
			if j.ResultDir != "" {
				fmt.Fprintf(w, "Results:\t%s\n", j.ResultDir)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if logs && j.ResultDir != "" {
				fmt.Fprintln(a.Stdout, "--- stdout")
				copyFrom(filepath.Join(j.ResultDir, "stdout"), 0, a.Stdout)
				fmt.Fprintln(a.Stdout, "--- stderr")
				copyFrom(filepath.Join(j.ResultDir, "stderr"), 0, a.Stdout)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().BoolVar(&logs, "logs", false, "print the job's stdout and stderr")
	c.Flags().BoolVarP(&follow, "follow", "f", false, "print the job's output as it comes (implies --logs) until the job ends, and exit with the job's code")
	return c
}

func newResultsCmd(a *App) *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:   "results ID --out DIR",
		Short: "Copy a finished job's results (stdout, stderr, out/, receipt) into DIR",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := a.resolveJob(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			j, err := a.client().Job(cmd.Context(), id)
			if err != nil {
				return a.jobError(id, err)
			}
			if j.ResultDir == "" {
				return fmt.Errorf("job %s has no results (state %s)", j.ID, j.State)
			}
			if err := collectResults(j, out); err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "results of %s in %s\n", j.ID, out)
			return nil
		},
	}
	c.Flags().StringVarP(&out, "out", "o", "", "directory for the results (required)")
	_ = c.MarkFlagRequired("out")
	return c
}

func newCancelCmd(a *App) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "Stop a job; the seller is paid only for the intervals already paid",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := a.resolveJob(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if err := a.client().Cancel(cmd.Context(), id); err != nil {
				return a.jobError(id, err)
			}
			fmt.Fprintf(a.Stdout, "job %s canceled\n", id)
			return nil
		},
	}
}

func newContractsCmd(a *App) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "contracts",
		Short: "The seller's contracts: running, done, earned",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cs, err := a.client().Contracts(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.Stdout, cs)
			}
			return printContracts(a.Stdout, time.Now(), cs)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}
