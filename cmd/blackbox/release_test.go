//go:build integration

package main

import (
	"bufio"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// The release build (make release) keeps the linker's removal of unused
// methods: once any reachable function calls reflect's Method or
// MethodByName with a name it cannot see, the linker keeps every exported
// method of every type that reaches an interface: 7 MB more here (grpc's
// request tracing through html/template did it; so did protobuf < 1.36.12
// under Go 1.26). The test links with the Makefile's release tags and
// -dumpdep and fails with the chain that reaches such a call.
func TestReleaseKeepsDeadCodeElimination(t *testing.T) {
	t.Parallel()
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^RELEASE_TAGS := (\S+)$`).FindSubmatch(mk)
	if m == nil {
		t.Fatal("no RELEASE_TAGS in the Makefile")
	}
	cmd := exec.Command("go", "build", "-tags", string(m[1]), "-trimpath", "-ldflags=-dumpdep", "-o", os.DevNull, ".")
	out, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Each line is "from -> to", a symbol's flags in <>; the first edge to
	// a symbol is the one that reached it.
	strip := func(s string) string {
		if i := strings.Index(s, " <"); i >= 0 {
			return s[:i]
		}
		return s
	}
	parent := map[string]string{}
	var first string // the first reflect method call reached: the cause
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		from, to, ok := strings.Cut(sc.Text(), " -> ")
		if !ok {
			continue
		}
		if strings.Contains(to, "<ReflectMethod>") && first == "" {
			first = strip(to)
		}
		if to = strip(to); parent[to] == "" {
			parent[to] = strip(from)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("go build -ldflags=-dumpdep: %v", err)
	}
	if first != "" {
		chain := []string{first}
		for s := first; parent[s] != "" && parent[s] != "_" && len(chain) < 40; s = parent[s] {
			chain = append(chain, parent[s])
		}
		t.Errorf("the release build reaches a reflect method call, which keeps every exported method:\n\t%s", strings.Join(chain, "\n\t  <- "))
	}
}
