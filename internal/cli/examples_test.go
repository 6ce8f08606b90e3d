package cli

import (
	"io"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestEveryCommandHasExamples walks the command tree: every command's
// --help shows at least one example, and every example is a command line
// the command itself parses (its subcommand path and flags exist), so that
// the examples cannot rot.
func TestEveryCommandHasExamples(t *testing.T) {
	a := &App{Stdout: io.Discard, Stderr: io.Discard, v: newViper()}
	root := a.newRoot()
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" {
			return
		}
		if strings.TrimSpace(c.Example) == "" {
			t.Errorf("`%s` has no Example: add one to examples.go or the command's Example field", c.CommandPath())
		}
		for _, line := range exampleLines(c.Example) {
			args := exampleArgs(line)
			if len(args) == 0 || args[0] != "blackbox" {
				t.Errorf("`%s`: example %q does not run blackbox", c.CommandPath(), line)
				continue
			}
			// Parse it on a fresh tree: flags parsed here stay set.
			fresh := (&App{Stdout: io.Discard, Stderr: io.Discard, v: newViper()}).newRoot()
			found, rest, err := fresh.Find(args[1:])
			if err != nil {
				t.Errorf("`%s`: example %q: %v", c.CommandPath(), line, err)
				continue
			}
			if !strings.HasPrefix(found.CommandPath()+" ", c.CommandPath()+" ") {
				t.Errorf("`%s`: example %q runs `%s`", c.CommandPath(), line, found.CommandPath())
			}
			if err := found.ParseFlags(rest); err != nil {
				t.Errorf("`%s`: example %q: %v", c.CommandPath(), line, err)
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// exampleLines returns the command lines of an Example text: not the
// comments, with continued lines joined.
func exampleLines(ex string) []string {
	var out []string
	cur := ""
	for _, l := range strings.Split(ex, "\n") {
		l = strings.TrimSpace(l)
		if cur == "" && (l == "" || strings.HasPrefix(l, "#")) {
			continue
		}
		if strings.HasSuffix(l, `\`) {
			cur += strings.TrimSuffix(l, `\`) + " "
			continue
		}
		out = append(out, cur+l)
		cur = ""
	}
	return out
}

// exampleArgs splits a shell line into words (quotes and all), drops
// leading VAR=value assignments, and stops at a comment, a pipe or a
// redirection.
func exampleArgs(line string) []string {
	var (
		words []string
		cur   strings.Builder
		quote rune
		in    bool
	)
	flush := func() {
		if in {
			words = append(words, cur.String())
		}
		cur.Reset()
		in = false
	}
loop:
	for _, r := range line {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, in = r, true
		case r == ' ' || r == '\t':
			flush()
		case (r == '#' || r == '|' || r == '>') && !in:
			break loop
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	flush()
	for len(words) > 0 && strings.Contains(words[0], "=") && !strings.HasPrefix(words[0], "-") {
		words = words[1:]
	}
	return words
}
