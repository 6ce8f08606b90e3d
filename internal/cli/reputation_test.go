package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

func testPeer(t *testing.T) string {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id.String()
}

func TestTrustAndReputationCommands(t *testing.T) {
	dir := t.TempDir()
	p, q := testPeer(t), testPeer(t)
	steps := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"trust", "add", p, "--weight", "0.6"}, 0, ""},
		{[]string{"trust", "add", q}, 0, ""},
		{[]string{"trust", "add", q, "--weight", "1.5"}, 1, "--weight"},
		{[]string{"trust", "add", "not-a-peer"}, 1, "not-a-peer"},
		{[]string{"trust", "rm", q}, 0, ""},
		{[]string{"trust", "ls"}, 0, p},
		{[]string{"reputation"}, 0, p},
		{[]string{"reputation", p}, 0, "why"},
		{[]string{"reputation", "forget", q}, 0, "forgot what this node knew of " + q},
		{[]string{"reputation", "forget", "not-a-peer"}, 1, "not-a-peer"},
		{[]string{"reputation", "forget"}, 2, "accepts 1 arg"}, // a usage error
	}
	for _, s := range steps {
		code, out, errOut := run(t, append([]string{"--data-dir", dir}, s.args...)...)
		if code != s.code {
			t.Fatalf("%v: exit %d, stderr %s", s.args, code, errOut)
		}
		if s.want != "" && !strings.Contains(out+errOut, s.want) {
			t.Fatalf("%v: output lacks %q:\n%s%s", s.args, s.want, out, errOut)
		}
	}
	_, out, _ := run(t, "--data-dir", dir, "trust", "ls", "--json")
	var edges []struct {
		Peer   string  `json:"peer"`
		Weight float64 `json:"weight"`
	}
	if err := json.Unmarshal([]byte(out), &edges); err != nil || len(edges) != 1 || edges[0].Peer != p || edges[0].Weight != 0.6 {
		t.Fatalf("trust ls --json: %v %s", err, out)
	}
	_, out, _ = run(t, "--data-dir", dir, "reputation", p, "--json")
	var sc struct {
		Peer  string  `json:"peer"`
		Mean  float64 `json:"mean"`
		Trust float64 `json:"trust"`
		Why   string  `json:"why"`
	}
	if err := json.Unmarshal([]byte(out), &sc); err != nil || sc.Peer != p || sc.Mean != 0.5 || sc.Trust != 0.6 || sc.Why == "" {
		t.Fatalf("reputation --json: %v %s", err, out)
	}
}

func TestReputationConfigErrorsNameTheKey(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(file, []byte("reputation:\n  threshold: 2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := run(t, "--data-dir", dir, "--config", file, "trust", "ls")
	if code == 0 || !strings.Contains(errOut, "threshold") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}
