package cli

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestREADMEConfigIsValid: every yaml block in the README is a config file
// the node accepts (its keys exist, its values parse): a reader copies it.
func TestREADMEConfigIsValid(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := 0
	for _, part := range strings.Split(string(raw), "```yaml\n")[1:] {
		block, _, ok := strings.Cut(part, "```")
		if !ok {
			t.Fatal("unterminated yaml block in README.md")
		}
		blocks++
		dir := t.TempDir()
		file := filepath.Join(dir, "blackbox.yaml")
		if err := os.WriteFile(file, []byte(block), 0o600); err != nil {
			t.Fatal(err)
		}
		a := &App{Stdout: io.Discard, Stderr: io.Discard, v: newViper(), dataDir: dir, configFile: file}
		if err := a.loadConfig(nil); err != nil {
			t.Fatalf("README yaml block %d: %v\n%s", blocks, err, block)
		}
		if _, err := a.NodeConfig(); err != nil {
			t.Errorf("README yaml block %d: %v\n%s", blocks, err, block)
		}
	}
	if blocks == 0 {
		t.Fatal("no yaml block in README.md")
	}
}
