package btcdtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// Pause stops the btcd process (SIGINT, as an operator's restart would)
// and keeps its data dir: Resume starts it again on the same RPC address
// with the chain it had. The harness's own RPC client (HTTP POST, one
// connection per call) is kept; its calls fail while btcd is paused.
func (h *Harness) Pause() {
	if h.cmd == nil || h.cmd.Process == nil {
		return
	}
	_ = h.cmd.Process.Signal(os.Interrupt)
	select {
	case <-h.done:
	case <-time.After(5 * time.Second):
		_ = h.cmd.Process.Kill()
		<-h.done
	}
}

// Resume starts a paused btcd again with the same arguments (data dir, RPC
// address, miner key) and the chain it had, and waits until it answers.
//
// btcd deletes a regtest chain at every start (removeRegressionDB, whose
// error it ignores): to keep it, the block database is moved beside the
// data dir and symlinked back, and the network's directory is made
// immutable (chattr +i) while btcd starts, so the symlink cannot be
// removed and btcd opens the chain through it. This needs root and a
// file system with the immutable flag (ext4, xfs, btrfs; not tmpfs).
func (h *Harness) Resume() error {
	select {
	case <-h.done:
	default:
		return errors.New("btcd is running: Pause it first")
	}
	netDir := filepath.Join(h.Dir, "regtest")
	db := filepath.Join(netDir, "blocks_ffldb")
	kept := filepath.Join(h.Dir, "blocks_ffldb.kept")
	if st, err := os.Lstat(db); err == nil && st.IsDir() {
		if err := os.Rename(db, kept); err != nil {
			return fmt.Errorf("keep the chain: %w", err)
		}
		if err := os.Symlink(kept, db); err != nil {
			return fmt.Errorf("keep the chain: %w", err)
		}
	}
	if out, err := exec.Command("chattr", "+i", netDir).CombinedOutput(); err != nil {
		return fmt.Errorf("keep the chain across a restart: chattr +i %s: %v: %s (needs root and ext4 or another file system with the immutable flag)", netDir, err, out)
	}
	defer exec.Command("chattr", "-i", netDir).Run()
	cmd := exec.Command(h.cmd.Path, h.cmd.Args[1:]...)
	cmd.Stdout, cmd.Stderr = h.cmd.Stdout, h.cmd.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("restart btcd: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	h.cmd, h.done = cmd, done
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := h.client.GetBlockCount()
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("restarted btcd exited; its log ends:\n%s", h.Logs())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("restarted btcd does not answer: %w", err)
		}
	}
}
