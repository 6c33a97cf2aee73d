package release

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/emmansun/gmsm/sm2"

	"github.com/hospital/gateway/alerts"
	"github.com/hospital/gateway/audit"
	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/policy"
	"github.com/hospital/gateway/privacy"
	"github.com/hospital/gateway/quota"
)

// Config wires the use case to the rest of the gateway.
type Config struct {
	Store  *catalog.Store
	Engine *engine.Engine
	// Audit, Quota, Alerts and Signer are optional: without them nothing
	// is audited, measured, watched or signed (tests and benchmarks).
	Audit  *audit.Log
	Quota  *quota.Tracker
	Alerts *alerts.Alerter
	Signer *sm2.PrivateKey
	// Limits bound each query; QueryTimeout is its wall-clock limit.
	Limits       privacy.Limits
	QueryTimeout time.Duration
	// GradeRules bound every dataset's policy by its grade; nil means
	// policy.DefaultGradeRules.
	GradeRules policy.GradeRules
	// MaxConcurrentQueries caps the queries one person may have running
	// at once, over every adapter; more are refused with
	// too_many_queries. Default 4.
	MaxConcurrentQueries int
	Log                  *slog.Logger
}

// Service runs releases.
type Service struct {
	cfg      Config
	running  *running
	analyses *analyses
}

// New returns the use case over cfg.
func New(cfg Config) *Service {
	if cfg.QueryTimeout <= 0 {
		cfg.QueryTimeout = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.GradeRules == nil {
		cfg.GradeRules = policy.DefaultGradeRules()
	}
	if cfg.MaxConcurrentQueries <= 0 {
		cfg.MaxConcurrentQueries = 4
	}
	return &Service{cfg: cfg, running: newRunning(cfg.MaxConcurrentQueries), analyses: newAnalyses(4096)}
}

// Request is a researcher's question.
type Request struct {
	SQL     string   `json:"sql"`
	Epsilon *float64 `json:"epsilon"`
	Delta   *float64 `json:"delta"`
	GrantID string   `json:"grant_id"`
	// Exact asks for an exact, small-cell-suppressed answer without noise,
	// which only general data with exact answers switched on allows.
	Exact bool `json:"exact"`
	// DryRun asks for the cost and the expected noise of the query only:
	// nothing is read, released or spent.
	DryRun bool `json:"dry_run"`
	// ContributionBound asks for the rows one patient may add (in all
	// groups, or in each group: see the answer's privacy.contribution), at
	// most the policy's maximum. Without it the bound is chosen from a
	// noisy histogram of rows per patient (privacy.BoundShare of epsilon).
	ContributionBound int64 `json:"contribution_bound,omitempty"`
	// TokenID is the credential the request came with, for the audit log.
	TokenID string `json:"-"`
}

// Answer is the one protected answer: what the API sends, what the
// receipt signs, what is stored for a repeat.
type Answer struct {
	QueryID string       `json:"query_id"`
	GrantID string       `json:"grant_id"`
	Grade   policy.Grade `json:"grade"`
	// The protected columns, rows and privacy report, as privacy made them.
	privacy.Answer
	Receipt *Receipt `json:"receipt,omitempty"`
}

// Result is a release: its answer, the bytes it is sent as, and the state
// of the budget after it.
//
// The answer is its Body: sent as JSON, it is never decoded; Answer
// decodes it for the other formats. A fresh answer and a repeat are read
// from the same stored bytes, so both are sent alike in every format.
type Result struct {
	// Body is the answer encoded once, as stored and as sent (see JSON).
	Body   []byte
	Budget catalog.Balance
	Cached bool
	// DryRun is set for a dry run: Body is its estimate, not an answer.
	DryRun bool
	// Datasets are the datasets the query read, for metrics.
	Datasets []string
	// Steps are how long each step of a fresh release took, in order, for
	// the operators' metrics; they are never sent with the answer.
	Steps []Step
	// Epsilon is what a fresh release spent, for the operators' metrics
	// (0 for a repeat or a dry run).
	Epsilon float64
	// decoded holds Body decoded, once; nil for a Result made without
	// NewResult, whose Body is decoded at each call.
	decoded *decodedBody
}

type decodedBody struct {
	once   sync.Once
	answer Answer
	err    error
}

// NewResult is the release of the answer body.
func NewResult(body []byte, bal catalog.Balance, cached bool, datasets []string) *Result {
	return &Result{Body: body, Budget: bal, Cached: cached, Datasets: datasets, decoded: &decodedBody{}}
}

// Answer is the answer Body holds.
func (r *Result) Answer() (Answer, error) {
	decode := func() (Answer, error) {
		var a Answer
		if err := json.Unmarshal(r.Body, &a); err != nil {
			return Answer{}, fmt.Errorf("decode stored answer: %w", err)
		}
		return a, nil
	}
	if r.decoded == nil {
		return decode()
	}
	r.decoded.once.Do(func() { r.decoded.answer, r.decoded.err = decode() })
	return r.decoded.answer, r.decoded.err
}

// Step is how long one step of a release took.
type Step struct {
	Name string
	Took time.Duration
}

// stepClock times the steps of one release.
type stepClock struct {
	last  time.Time
	steps []Step
}

func newStepClock() *stepClock { return &stepClock{last: time.Now(), steps: make([]Step, 0, 12)} }

// done records that step has ended now.
func (c *stepClock) done(step string) {
	now := time.Now()
	c.steps = append(c.steps, Step{step, now.Sub(c.last)})
	c.last = now
}

// estimate is what a dry run answers: the cost, how its delta splits
// between the k rule's threshold (partition selection) and the Gaussian
// noise, its zCDP rho, the expected noise, and where the grant would
// stand after it (budget_after: the accountant's charge is not the
// query's epsilon added to the last).
type estimate struct {
	DryRun      bool            `json:"dry_run"`
	Cost        estimatedCost   `json:"cost"`
	Privacy     privacy.Report  `json:"privacy"`
	BudgetAfter catalog.Balance `json:"budget_after"`
}

type estimatedCost struct {
	Epsilon        float64 `json:"epsilon"`
	Delta          float64 `json:"delta"`
	DeltaPartition float64 `json:"delta_partition"`
	DeltaGaussian  float64 `json:"delta_gaussian"`
	Rho            float64 `json:"rho"`
}

// JSON is the response body: Body with the budget and the cached flag,
// which change from one release of a stored answer to the next, added.
func (r *Result) JSON() ([]byte, error) {
	var extra []byte
	var err error
	if r.DryRun {
		extra, err = json.Marshal(struct {
			Budget catalog.Balance `json:"budget"`
		}{r.Budget})
	} else {
		extra, err = json.Marshal(struct {
			Budget catalog.Balance `json:"budget"`
			Cached bool            `json:"cached"`
		}{r.Budget, r.Cached})
	}
	if err != nil {
		return nil, fmt.Errorf("encode budget: %w", err)
	}
	if len(r.Body) < 2 || r.Body[len(r.Body)-1] != '}' || extra[0] != '{' {
		return nil, fmt.Errorf("encode answer: stored answer is not an object")
	}
	out := make([]byte, 0, len(r.Body)+len(extra))
	out = append(out, r.Body[:len(r.Body)-1]...)
	out = append(out, ',')
	return append(out, extra[1:]...), nil
}

func cacheKey(canonical string, c privacy.Cost) string {
	h := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%g\x00%g", canonical, c.Epsilon, c.Delta)))
	return hex.EncodeToString(h[:])
}
