package dashboard

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/meter"
)

// selfSigned writes a certificate for ips and its key as PEM files.
func selfSigned(t *testing.T, ips ...net.IP) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "blackbox test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: ips}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return cert, key
}

// outsideIP is one of this machine's addresses that is not loopback.
func outsideIP(t *testing.T) net.IP {
	t.Helper()
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP
		}
	}
	t.Skip("this machine has no non-loopback IPv4 address to connect from")
	return nil
}

// TestTLSFromElsewhere serves the dashboard over TLS on all addresses and
// connects to the machine's own non-loopback address, as another machine
// would: no token, 401; ?token= sets the cookie and redirects; the cookie
// and the Bearer header get in.
func TestTLSFromElsewhere(t *testing.T) {
	ip := outsideIP(t)
	cert, key := selfSigned(t, ip)
	srv, err := Listen(Config{Addr: "0.0.0.0:0", TLSCert: cert, TLSKey: key}, Handler(&fakeNode{cfg: meter.DefaultConfig()}, testToken, nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if !strings.HasPrefix(srv.URL(), "https://") {
		t.Fatalf("URL %s", srv.URL())
	}
	_, port, _ := net.SplitHostPort(strings.TrimSuffix(strings.TrimPrefix(srv.URL(), "https://"), "/"))
	base := "https://" + net.JoinHostPort(ip.String(), port)
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(cert)
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	get := func(path string, hdr ...string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := get("/api/overview"); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token from %s: %d", ip, r.StatusCode)
	}
	r := get("/?token=" + testToken)
	if r.StatusCode != http.StatusSeeOther || len(r.Cookies()) != 1 || !r.Cookies()[0].Secure {
		t.Fatalf("?token=: %d, cookies %+v", r.StatusCode, r.Cookies())
	}
	if r := get("/api/overview", "Cookie", r.Cookies()[0].Name+"="+r.Cookies()[0].Value); r.StatusCode != 200 {
		t.Fatalf("with the cookie: %d", r.StatusCode)
	}
	if r := get("/api/overview", "Authorization", "Bearer "+testToken); r.StatusCode != 200 {
		t.Fatalf("with the bearer token: %d", r.StatusCode)
	}
	// Plain HTTP to a non-loopback address is refused without the override.
	if _, err := Listen(Config{Addr: "0.0.0.0:0"}, http.NotFoundHandler()); err == nil || !strings.Contains(err.Error(), "dashboard_tls_cert") {
		t.Fatalf("plain HTTP on 0.0.0.0: %v", err)
	}
}
