package btcdtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
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
	case <-time.After(10 * time.Second):
		_ = h.cmd.Process.Kill()
		<-h.done
	}
}

// Resume starts a paused btcd again with the same arguments (data dir, RPC
// address, miner key) and waits until it answers.
func (h *Harness) Resume() error {
	select {
	case <-h.done:
	default:
		return errors.New("btcd is running: Pause it first")
	}
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
			return errors.New("restarted btcd exited")
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("restarted btcd does not answer: %w", err)
		}
	}
}
