package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/hospital/gateway/api/apitest"
	"github.com/hospital/gateway/demo"
)

// insider is one person acting alone, with everyone they manage to add and
// every secret, code, change and token they come to hold.
type insider struct {
	t       *testing.T
	env     *apitest.Env
	rng     *rand.Rand
	tokens  []string // tokens usable by the insider: their own and any obtained
	secrets []string // enrolment secrets
	codes   []string // confirmation codes
	changes []string // ids of changes to people
	prot    []string // ids of protection changes
	reqs    []string // ids of access requests
	people  []string // people the insider knows of
	n       int
}

var roleSets = [][]string{
	{"admin"}, {"steward"}, {"approver"}, {"researcher"}, {"auditor"}, {"steward", "approver"},
	{"admin", "researcher"}, {"admin", "approver"}, {"approver", "researcher"}, {"auditor", "researcher"},
}

func (in *insider) pick(xs []string) string {
	if len(xs) == 0 {
		return "none"
	}
	return xs[in.rng.IntN(len(xs))]
}

// do sends a request as each of the insider's identities in turn, until
// one succeeds, and harvests whatever secrets, codes and ids come back. It
// fails the test on a data answer.
func (in *insider) do(method, path string, body any) {
	for _, tok := range append([]string(nil), in.tokens...) {
		if in.try(method, path, tok, body) < 300 {
			return
		}
	}
}

func (in *insider) try(method, path, token string, body any) int {
	var out map[string]any
	status, _ := in.env.Do(method, path, token, body, &out)
	if path == "/v1/queries" && status == 200 {
		in.t.Fatalf("%s %s answered with data: %v", method, path, out)
	}
	in.harvest(path, out)
	return status
}

func (in *insider) harvest(path string, out map[string]any) {
	if out == nil {
		return
	}
	if e, ok := out["enrolment"].(map[string]any); ok {
		in.secrets = append(in.secrets, fmt.Sprint(e["secret"]))
	}
	if c, ok := out["change"].(map[string]any); ok {
		if _, ok := c["kind"]; ok {
			in.changes = append(in.changes, fmt.Sprint(c["id"]))
		} else {
			in.prot = append(in.prot, fmt.Sprint(c["id"]))
		}
	}
	if code, ok := out["confirmation_code"].(string); ok && code != "" {
		in.codes = append(in.codes, code)
	}
	if tok, ok := out["token"].(string); ok && tok != "" {
		in.tokens = append(in.tokens, tok)
	}
	if id, ok := out["id"].(string); ok && path == "/v1/access-requests" {
		in.reqs = append(in.reqs, id)
	}
}

// step takes one action the insider could take.
func (in *insider) step() {
	in.n++
	roles := roleSets[in.rng.IntN(len(roleSets))]
	who := in.pick(in.people)
	expires := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	switch in.rng.IntN(17) {
	case 0, 14, 15, 16: // adding people is what every attack starts with
		id := fmt.Sprintf("puppet%d", in.n)
		in.people = append(in.people, id)
		in.do("POST", "/v1/people", map[string]any{"id": id, "name": id, "org_id": "demo-hospital", "roles": roles})
	case 1:
		in.do("POST", "/v1/people/"+who+"/roles", map[string]any{"roles": roles})
	case 2:
		in.do("POST", "/v1/people/"+who+"/activate", nil)
	case 3:
		in.do("POST", "/v1/people/"+who+"/deactivate", nil)
	case 4:
		in.do("POST", "/v1/people/"+who+"/enrolment", nil)
	case 5:
		for _, c := range in.changes {
			in.do("POST", "/v1/person-changes/"+c+"/confirm", nil)
		}
	case 6:
		for _, sec := range in.secrets {
			for _, code := range append([]string{""}, in.codes...) {
				in.try("POST", "/v1/enrol", "", map[string]any{"secret": sec, "confirmation_code": code})
			}
		}
	case 7:
		in.do("POST", "/v1/people/"+who+"/tokens", map[string]any{"label": "x"})
	case 8:
		var list struct {
			Tokens []struct {
				ID string `json:"id"`
			} `json:"tokens"`
		}
		in.env.Do("GET", "/v1/people/"+who+"/tokens", in.pick(in.tokens), nil, &list)
		for _, tk := range list.Tokens {
			in.do("POST", "/v1/tokens/"+tk.ID+"/rotate", nil)
		}
	case 9:
		in.do("POST", "/v1/access-requests", map[string]any{"datasets": []string{demo.Dataset}, "purpose": "p", "epsilon": 1, "expires_at": expires})
	case 10:
		for _, r := range in.reqs {
			in.do("POST", "/v1/access-requests/"+r+"/approve", nil)
			in.do("POST", "/v1/access-requests/"+r+"/verify", nil)
		}
	case 11:
		in.do("POST", "/v1/queries", map[string]any{"sql": "SELECT sex, count(*) FROM patients GROUP BY sex", "exact": in.rng.IntN(2) == 0})
	case 12:
		in.do("POST", "/v1/datasets/"+demo.Dataset+"/grade", map[string]any{"grade": "general", "reason": "r"})
		in.do("POST", "/v1/datasets/"+demo.Dataset+"/exact", map[string]any{"exact_answers": true, "reason": "r"})
	case 13:
		for _, c := range in.prot {
			in.do("POST", "/v1/protection-changes/"+c+"/verify", nil)
		}
	}
}

// TestNoInsiderAlone runs random sequences of every kind of call by one
// admin, one steward or one approver, using any people, secrets, codes and
// tokens they come to hold, and checks that none yields a grant, a data
// answer, or a lower protection of the demo dataset. The random source is
// seeded, so a failure replays. Each step tries its call with every
// identity the insider holds; 6 sequences of 50 steps per insider, each on
// a fresh gateway.
func TestNoInsiderAlone(t *testing.T) {
	for _, who := range []string{"admin", "steward", "approver"} {
		for seq := range 6 {
			t.Run(fmt.Sprintf("%s/%d", who, seq), func(t *testing.T) {
				// No rate limit: the insider may try every secret and code.
				env := apitest.New(t, apitest.Options{Patients: 100, AnonymousPerMinute: 1 << 30})
				ctx := context.Background()
				grants, err := env.Store.Grants(ctx, "")
				if err != nil {
					t.Fatal(err)
				}
				d, err := env.Store.Dataset(ctx, demo.Dataset)
				if err != nil {
					t.Fatal(err)
				}
				before, _ := json.Marshal(d.Policy)
				in := &insider{t: t, env: env, rng: rand.New(rand.NewPCG(uint64(seq), 7)),
					tokens: []string{env.Tokens[who]}, people: []string{"admin", "steward", "approver", "auditor", "researcher_internal", who}}
				for range 50 {
					in.step()
				}
				after, err := env.Store.Grants(ctx, "")
				if err != nil {
					t.Fatal(err)
				}
				if len(after) != len(grants) {
					t.Errorf("%s alone obtained %d grants", who, len(after)-len(grants))
				}
				d2, err := env.Store.Dataset(ctx, demo.Dataset)
				if err != nil {
					t.Fatal(err)
				}
				now, _ := json.Marshal(d2.Policy)
				if d2.Grade != d.Grade || d2.ExactAnswers || string(now) != string(before) {
					t.Errorf("%s alone lowered the protection: grade %s, exact %v, policy changed %v", who, d2.Grade, d2.ExactAnswers, string(now) != string(before))
				}
				t.Logf("%d steps: %d tokens, %d secrets, %d codes, %d changes, %d requests", in.n, len(in.tokens), len(in.secrets), len(in.codes), len(in.changes), len(in.reqs))
			})
		}
	}
}
