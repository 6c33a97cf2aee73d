package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/hospital/gateway/api/status"
	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/privacy"
)

// The messages between the coordinator and the nodes, as JSON over mutual
// TLS. Binary values (key shares, ciphertexts) are lattigo's own binary
// encodings, base64 in JSON.

// keygenRequest starts a key generation round.
type keygenRequest struct {
	Round   string   `json:"round"`
	Seed    []byte   `json:"seed"`
	Members []string `json:"members"`
}

// keygenFinish hands every node every member's signed share.
type keygenFinish struct {
	Round  string   `json:"round"`
	Shares []Signed `json:"shares"`
}

// keygenDone is a node's digest of the collective public key; the
// coordinator checks that every node computed the same one.
type keygenDone struct {
	Node      string `json:"node"`
	PublicKey string `json:"public_key_sha256"`
}

// nodeStatus says which key round a node holds.
type nodeStatus struct {
	Node    string   `json:"node"`
	Round   string   `json:"round"`
	Members []string `json:"members"`
}

// shareRequest asks a node for its share of a query.
type shareRequest struct {
	QueryID     string              `json:"query_id"`
	Researcher  string              `json:"researcher"`
	SQL         string              `json:"sql"`
	Epsilon     *float64            `json:"epsilon,omitempty"`
	Delta       float64             `json:"delta"`
	GrantID     string              `json:"grant_id,omitempty"`
	Aggregation privacy.Aggregation `json:"aggregation"`
	Members     []string            `json:"members"`
	Round       string              `json:"round,omitempty"`
}

// shareResponse is a node's share: values in the clear, or ciphertexts
// signed by the node.
type shareResponse struct {
	Node        string          `json:"node"`
	NodeQueryID string          `json:"node_query_id"`
	GrantID     string          `json:"grant_id"`
	Layout      string          `json:"layout"`
	K           int             `json:"k"`
	Cost        privacy.Cost    `json:"cost"`
	Budget      catalog.Balance `json:"budget"`
	Values      []float64       `json:"values,omitempty"`
	Encrypted   *Signed         `json:"encrypted,omitempty"`
}

// switchRequest asks a node to re-encrypt the sum of every member's
// ciphertexts towards target.
type switchRequest struct {
	QueryID string   `json:"query_id"`
	Round   string   `json:"round"`
	Target  []byte   `json:"target"`
	Parts   []Signed `json:"parts"`
}

// switchResponse is a node's key-switch shares, one per ciphertext.
type switchResponse struct {
	Node   string   `json:"node"`
	Shares [][]byte `json:"shares"`
}

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// maxMessage caps what either side reads from the other: 8 nodes' shares of
// the largest domain fit many times over.
const maxMessage = 64 << 20

// call posts in (or GETs when in is nil) to url and decodes the answer into
// out. It returns the bytes sent and received. An error answer keeps the
// other side's kind and message, prefixed with the node's name; a transport
// failure is Unavailable.
func call(ctx context.Context, client *http.Client, node, url string, in, out any) (sent, received int, err error) {
	method, body := http.MethodGet, []byte(nil)
	if in != nil {
		method = http.MethodPost
		if body, err = json.Marshal(in); err != nil {
			return 0, 0, fmt.Errorf("encode request to %s: %w", node, err)
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return 0, 0, fmt.Errorf("request to %s: %w", node, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return len(body), 0, fault.Wrap(fault.Unavailable, err, "node %s did not answer in time; no partial answer is released", node)
		}
		return len(body), 0, fault.Wrap(fault.Unavailable, err, "node %s is unavailable; no partial answer is released", node)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxMessage+1))
	if err != nil {
		return len(body), len(b), fault.Wrap(fault.Unavailable, err, "node %s broke off its answer; no partial answer is released", node)
	}
	if len(b) > maxMessage {
		return len(body), len(b), fault.E(fault.Unavailable, "node %s sent more than %d bytes", node, maxMessage)
	}
	if resp.StatusCode != http.StatusOK {
		var e errorBody
		if json.Unmarshal(b, &e) != nil || e.Error.Code == "" {
			return len(body), len(b), fault.E(fault.Unavailable, "node %s answered %s", node, resp.Status)
		}
		k := fault.KindOfCode(e.Error.Code)
		if k == fault.Internal {
			return len(body), len(b), fault.E(fault.Unavailable, "node %s failed: %s", node, e.Error.Message)
		}
		return len(body), len(b), fault.E(k, "node %s: %s", node, e.Error.Message)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return len(body), len(b), fault.Wrap(fault.Unavailable, err, "node %s sent an unreadable answer", node)
	}
	return len(body), len(b), nil
}

// writeError answers err as the gateway's error JSON.
func writeError(w http.ResponseWriter, err error) {
	k := fault.KindOf(err)
	var e errorBody
	e.Error.Code, e.Error.Message = k.Code(), fault.Message(err)
	writeJSON(w, status.Of(k), e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// readJSON decodes a request body of at most maxMessage bytes.
func readJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxMessage))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fault.Wrap(fault.Invalid, err, "the body is not a valid message")
	}
	return nil
}
