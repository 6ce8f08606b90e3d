package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/blackbox-market/blackbox/internal/api"
)

// IDs are long (a job's 16 hex digits, a channel's funding outpoint, a
// peer's 52 characters): the commands that name one take any unique prefix
// of it, as docker and git do, resolved against the list the node has.

// prefixError is a prefix that names no ID, or several. It wraps
// api.ErrNotFound when none matched, so callers branch on it as on the
// daemon's own not-found, without its text repeated.
type prefixError struct {
	msg      string
	notFound bool
}

func (e *prefixError) Error() string { return e.msg }

func (e *prefixError) Unwrap() error {
	if e.notFound {
		return api.ErrNotFound
	}
	return nil
}

// resolvePrefix returns the one of ids that is s or starts with it. kind
// names the thing ("job"); list is the command that lists them, for the
// next step.
func resolvePrefix(kind, list, s string, ids []string) (string, error) {
	if s == "" {
		return "", fmt.Errorf("empty %s ID: `%s` lists them", kind, list)
	}
	var match []string
	for _, id := range ids {
		if id == s {
			return id, nil
		}
		if strings.HasPrefix(id, s) {
			match = append(match, id)
		}
	}
	slices.Sort(match)
	match = slices.Compact(match)
	switch len(match) {
	case 1:
		return match[0], nil
	case 0:
		return "", &prefixError{notFound: true, msg: fmt.Sprintf("no %s %q: `%s` lists them", kind, s, list)}
	}
	shown := match
	if len(shown) > 5 {
		shown = shown[:5]
	}
	more := ""
	if len(match) > len(shown) {
		more = fmt.Sprintf(" and %d more", len(match)-len(shown))
	}
	return "", &prefixError{msg: fmt.Sprintf("%s ID %q is ambiguous: %d %ss start with it (%s%s); give more of it",
		kind, s, len(match), kind, strings.Join(shown, ", "), more)}
}

// resolveJob turns a job ID or a unique prefix of one into the job's ID.
func (a *App) resolveJob(ctx context.Context, s string) (string, error) {
	jobs, err := a.client().Jobs(ctx)
	if err != nil {
		return "", err
	}
	ids := make([]string, 0, len(jobs))
	for _, j := range jobs {
		ids = append(ids, j.ID)
	}
	return resolvePrefix("job", "blackbox jobs", s, ids)
}

// resolveChannel turns a channel ID (its funding outpoint, txid:vout) or a
// unique prefix of one into the channel's ID, from the daemon's list or,
// with no daemon, the database's.
func (a *App) resolveChannel(ctx context.Context, s string) (string, error) {
	list, err := a.client().Channels(ctx)
	if errors.Is(err, api.ErrNoDaemon) {
		list, err = a.loadChannels()
	}
	if err != nil {
		return "", err
	}
	ids := make([]string, 0, len(list))
	for _, ch := range list {
		ids = append(ids, ch.ID)
	}
	return resolvePrefix("channel", "blackbox channels", s, ids)
}

// resolvePeer turns a peer ID, or a unique prefix of a peer this node knows
// (scored or trusted), into the peer's ID. A full peer ID is taken as it
// is, known or not: trust add names peers this node has not met yet.
func resolvePeer(ctx context.Context, v reputationView, s string) (peer.ID, error) {
	if id, err := peer.Decode(s); err == nil {
		return id, nil
	}
	scores, err := v.Scores(ctx)
	if err != nil {
		return "", err
	}
	edges, err := v.Trust(ctx)
	if err != nil {
		return "", err
	}
	var ids []string
	for _, sc := range scores {
		ids = append(ids, sc.Peer.String())
	}
	for _, e := range edges {
		ids = append(ids, e.Peer)
	}
	full, err := resolvePrefix("peer", "blackbox reputation", s, ids)
	if err != nil {
		var pe *prefixError
		if errors.As(err, &pe) && pe.notFound {
			pe.msg = fmt.Sprintf("no known peer starts with %q: give its full peer ID (12D3KooW…, 52 characters), or see `blackbox reputation`", s)
		}
		return "", err
	}
	return parsePeer(full)
}
