package federation

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// The federation's trust: one certificate authority, held by the body that
// admits hospitals to the federation, issues a certificate to every node
// and to the coordinator, with the member's name as common name. Every
// connection is mutual TLS 1.3 against that authority, and every key share
// and ciphertext a node produces is signed with its certificate's key, so
// that other nodes can check what the coordinator relays. ECDSA P-256 is
// used because Go's TLS stack has no SM2 suites; the data itself is under
// CKKS encryption, and the audit log and receipts keep SM2 and SM3.

// Identity is a federation member's certificate, key and trust anchor.
type Identity struct {
	Name string
	Cert tls.Certificate
	Leaf *x509.Certificate
	Key  *ecdsa.PrivateKey
	CA   *x509.CertPool
}

// IssueCertificates creates, in dir, a federation authority (ca.pem,
// ca.key) if there is none, and a certificate and key (NAME.pem, NAME.key)
// for each name that has none. Keys are written with mode 0600.
func IssueCertificates(dir string, names []string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create certificate directory: %w", err)
	}
	caCert, caKey, err := loadOrCreateCA(dir)
	if err != nil {
		return err
	}
	for _, name := range names {
		if _, err := os.Stat(filepath.Join(dir, name+".pem")); err == nil {
			continue
		}
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return fmt.Errorf("generate key for %s: %w", name, err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: serial(),
			Subject:      pkix.Name{CommonName: name, Organization: []string{"gateway federation"}},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().AddDate(1, 0, 0),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			DNSNames:     []string{name, "localhost"},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return fmt.Errorf("issue certificate for %s: %w", name, err)
		}
		if err := writePEM(filepath.Join(dir, name+".key"), key); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
			return fmt.Errorf("write certificate for %s: %w", name, err)
		}
	}
	return nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return n
}

func loadOrCreateCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPath, keyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	if _, err := os.Stat(certPath); err == nil {
		pair, err := tls.LoadX509KeyPair(certPath, keyPath)
		if err != nil {
			return nil, nil, fmt.Errorf("load federation authority: %w", err)
		}
		key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
		if !ok {
			return nil, nil, fmt.Errorf("federation authority key is not ECDSA")
		}
		cert, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			return nil, nil, fmt.Errorf("parse federation authority: %w", err)
		}
		return cert, key, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate authority key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "gateway federation authority"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(5, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create authority certificate: %w", err)
	}
	if err := writePEM(keyPath, key); err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, nil, fmt.Errorf("write authority certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

func writePEM(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode key: %w", err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("write key %s: %w", path, err)
	}
	return nil
}

// LoadIdentity reads NAME.pem, NAME.key and ca.pem from dir.
func LoadIdentity(dir, name string) (*Identity, error) {
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key"))
	if err != nil {
		return nil, fmt.Errorf("load certificate of %s: %w", name, err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key of %s is not ECDSA", name)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("parse certificate of %s: %w", name, err)
	}
	if leaf.Subject.CommonName != name {
		return nil, fmt.Errorf("certificate %s.pem names %q", name, leaf.Subject.CommonName)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		return nil, fmt.Errorf("read federation authority: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("ca.pem holds no certificate")
	}
	return &Identity{Name: name, Cert: pair, Leaf: leaf, Key: key, CA: pool}, nil
}

// ServerTLS accepts only clients with a certificate from the authority.
func (id *Identity) ServerTLS() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{id.Cert},
		ClientCAs:    id.CA,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}
}

// ClientTLS presents id's certificate and trusts only the authority.
func (id *Identity) ClientTLS() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{id.Cert},
		RootCAs:      id.CA,
		MinVersion:   tls.VersionTLS13,
	}
}

// Signed is data that a node vouches for: the blobs, the node's name and
// certificate, and its signature over the context and the blobs.
type Signed struct {
	Node  string   `json:"node"`
	Cert  []byte   `json:"cert"`
	Blobs [][]byte `json:"blobs"`
	Sig   []byte   `json:"sig"`
}

// digest binds blobs to what they are (kind), to the round or query they
// belong to, and to the node that made them.
func digest(kind, about, node string, blobs [][]byte) []byte {
	h := sha256.New()
	fmt.Fprintf(h, "gateway-federation/v1\x00%s\x00%s\x00%s\x00%d\x00", kind, about, node, len(blobs))
	for _, b := range blobs {
		fmt.Fprintf(h, "%d\x00", len(b))
		h.Write(b)
	}
	return h.Sum(nil)
}

// Sign vouches for blobs of the given kind about a round or query.
func (id *Identity) Sign(kind, about string, blobs [][]byte) (Signed, error) {
	sig, err := ecdsa.SignASN1(rand.Reader, id.Key, digest(kind, about, id.Name, blobs))
	if err != nil {
		return Signed{}, fmt.Errorf("sign %s: %w", kind, err)
	}
	return Signed{Node: id.Name, Cert: id.Cert.Certificate[0], Blobs: blobs, Sig: sig}, nil
}

// Verify checks that s was signed, for this kind and round or query, by the
// member it names, with a certificate from the authority.
func (id *Identity) Verify(kind, about string, s Signed) error {
	cert, err := x509.ParseCertificate(s.Cert)
	if err != nil {
		return fmt.Errorf("%s of %s: bad certificate: %w", kind, s.Node, err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: id.CA, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("%s of %s: certificate not from the federation authority: %w", kind, s.Node, err)
	}
	if cert.Subject.CommonName != s.Node {
		return fmt.Errorf("%s of %s: signed by %q", kind, s.Node, cert.Subject.CommonName)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !ecdsa.VerifyASN1(pub, digest(kind, about, s.Node, s.Blobs), s.Sig) {
		return fmt.Errorf("%s of %s: bad signature", kind, s.Node)
	}
	return nil
}
