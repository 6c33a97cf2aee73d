package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/flight/flightsql"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// TestDemoFlight serves the demo with --flight-addr and asks over Flight
// SQL with a demo token; the budget it spends is the one REST reports.
func TestDemoFlight(t *testing.T) {
	dir := t.TempDir()
	addr, flightAddr := freeAddr(t), freeAddr(t)
	stop := startDemo(t, dir, addr, "--flight-addr", flightAddr)
	defer stop()
	b, err := os.ReadFile(filepath.Join(dir, "demo-credentials.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c creds
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	client, err := flightsql.NewClient(flightAddr, nil, nil, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+c.Tokens["researcher_internal"], "gateway-epsilon", "0.3")
	info, err := client.Execute(ctx, "SELECT province, count(*) AS n FROM patients GROUP BY province")
	if err != nil {
		t.Fatal(err)
	}
	r, err := client.DoGet(ctx, info.Endpoint[0].Ticket)
	if err != nil {
		t.Fatal(err)
	}
	var rows int64
	for r.Next() {
		rows += r.RecordBatch().NumRows()
	}
	r.Release()
	if err := r.Err(); err != nil || rows == 0 {
		t.Fatalf("fetched %d rows, err %v", rows, err)
	}
	st, out := post(t, c, "researcher_internal", `{"sql": "SELECT count(*) AS n FROM patients", "epsilon": 0.1}`)
	if st != http.StatusOK {
		t.Fatalf("REST query: %d %v", st, out)
	}
	if spent := out["budget"].(map[string]any)["epsilon_spent"].(float64); spent < 0.399 || spent > 0.401 {
		t.Errorf("spent %v after 0.3 over Flight SQL and 0.1 over REST; want 0.4", spent)
	}
}

// TestFlightAddrBusy fails at once, naming the flag, when the Flight SQL
// address is taken, before any dataset is generated or loaded.
func TestFlightAddrBusy(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := filepath.Join(t.TempDir(), "gateway.yaml")
	os.WriteFile(cfg, []byte("addr: "+freeAddr(t)+"\ndir: "+t.TempDir()+"\n"), 0o600)
	err = run(context.Background(), []string{"serve", "--config", cfg, "--flight-addr", busy.Addr().String()}, io.Discard, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "flight") {
		t.Fatalf("got %v; want a refusal naming the Flight SQL address", err)
	}
}

// TestServeFlightTLS serves Flight SQL from flight_addr over the
// configuration's TLS pair: a TLS client reaches it, and a call without a
// token is refused as unauthenticated.
func TestServeFlightTLS(t *testing.T) {
	etc := t.TempDir()
	certPEM := selfSigned(t, etc)
	addr, flightAddr := freeAddr(t), freeAddr(t)
	cfg := filepath.Join(etc, "gateway.yaml")
	os.WriteFile(cfg, []byte("addr: "+addr+"\ndir: "+filepath.Join(etc, "data")+"\nflight_addr: "+flightAddr+"\ntls_cert: cert.pem\ntls_key: key.pem\n"), 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--config", cfg}, io.Discard, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	client, err := flightsql.NewClient(flightAddr, nil, nil, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err = client.GetCatalogs(context.Background())
		if status.Code(err) == codes.Unauthenticated || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st, _ := status.FromError(err); st.Code() != codes.Unauthenticated || !strings.HasPrefix(st.Message(), "unauthenticated: ") {
		t.Fatalf("got %v; want unauthenticated over TLS", err)
	}
}

// selfSigned writes cert.pem and key.pem for 127.0.0.1 into dir and
// returns the certificate.
func selfSigned(t *testing.T, dir string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gateway test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	os.WriteFile(filepath.Join(dir, "cert.pem"), cert, 0o600)
	os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return cert
}
