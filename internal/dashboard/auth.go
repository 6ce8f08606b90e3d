package dashboard

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/blackbox-market/blackbox/pkg/atomicfile"
)

// TokenFile is the dashboard token's name in the data dir.
const TokenFile = "dashboard.token"

// cookieName carries the token once a browser has shown it.
const cookieName = "blackbox_dashboard"

// LoadOrCreateToken reads DATA_DIR/dashboard.token, creating it (0600, 32
// random bytes in hex) on first use.
func LoadOrCreateToken(dataDir string) (string, error) {
	path := filepath.Join(dataDir, TokenFile)
	b, err := os.ReadFile(path)
	if err == nil {
		tok := strings.TrimSpace(string(b))
		if len(tok) < 32 {
			return "", fmt.Errorf("dashboard token %s is too short: delete it and a new one is made at the next start", path)
		}
		return tok, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read dashboard token: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	tok := hex.EncodeToString(raw)
	if err := atomicfile.Write(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write dashboard token: %w", err)
	}
	return tok, nil
}

// guard is the dashboard's access rule:
//
//   - A client on this machine (a loopback address) that names the server
//     by a loopback host (localhost, 127.0.0.1, [::1]) needs nothing. The
//     host check stops a web page elsewhere from reaching the dashboard
//     through a DNS name it points at 127.0.0.1 (DNS rebinding).
//   - Anyone else needs the token: in an Authorization: Bearer header, in
//     the cookie, or once as ?token= in the URL, which sets the cookie
//     (HttpOnly, SameSite=Strict, Secure over TLS) and redirects to the same
//     URL without it.
//   - A request that changes something (any method but GET and HEAD) must
//     be JSON and come from the dashboard's own origin (Origin and
//     Sec-Fetch-Site, when the browser sends them): another site's page
//     cannot post to it, even to a loopback dashboard.
type guard struct {
	token string
	next  http.Handler
}

func (g guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if q := r.URL.Query().Get("token"); q != "" {
		if !g.valid(q) {
			http.Error(w, "wrong dashboard token: copy it from DATA_DIR/"+TokenFile, http.StatusUnauthorized)
			return
		}
		http.SetCookie(w, &http.Cookie{Name: cookieName, Value: g.token, Path: "/", HttpOnly: true,
			Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
		u := *r.URL
		v := u.Query()
		v.Del("token")
		u.RawQuery = v.Encode()
		http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
		return
	}
	if !g.local(r) && !g.valid(g.presented(r)) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="blackbox dashboard"`)
		http.Error(w, "this dashboard needs its token from another machine: open it once as "+
			"https://HOST:PORT/?token=TOKEN with the token in DATA_DIR/"+TokenFile+" (or send Authorization: Bearer TOKEN)",
			http.StatusUnauthorized)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if err := sameOrigin(r); err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
	}
	g.next.ServeHTTP(w, r)
}

func (g guard) valid(tok string) bool {
	return tok != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(g.token)) == 1
}

// presented is the token the request carries, if any.
func (g guard) presented(r *http.Request) string {
	if a := r.Header.Get("Authorization"); a != "" {
		if t, ok := strings.CutPrefix(a, "Bearer "); ok {
			return strings.TrimSpace(t)
		}
	}
	if c, err := r.Cookie(cookieName); err == nil {
		return c.Value
	}
	return ""
}

// local is a client on this machine that named a loopback host.
func (g guard) local(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil || !isLoopbackHost(host) {
		return false
	}
	name := r.Host
	if h, _, err := net.SplitHostPort(name); err == nil {
		name = h
	}
	return isLoopbackHost(name)
}

// isLoopbackHost is localhost or a loopback IP.
func isLoopbackHost(h string) bool {
	h = strings.Trim(h, "[]")
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// sameOrigin checks that a state-changing request is the page's own.
func sameOrigin(r *http.Request) error {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return errors.New("changes must be sent as application/json")
	}
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return errors.New("cross-site request refused")
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || !strings.EqualFold(u.Host, r.Host) {
			return fmt.Errorf("cross-origin request from %s refused", o)
		}
	}
	return nil
}
