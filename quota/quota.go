// Package quota measures the Article 11 quota of core data: for each core
// dataset and calendar year, the share of the dataset's static total (its
// privacy units, patients, at the end of the previous year; at registration
// for the first year) that has been provided to other legal entities.
//
// The share is measured, not estimated: every release to another legal entity
// records which patients' rows entered the released aggregation, as a roaring
// bitmap per dataset, year and recipient, and the cumulative share is the
// size of the union of those bitmaps over the static total. The units are
// computed in the same DuckDB pass as the answer, after contribution
// bounding, so a patient whose rows were bounded away is not counted; the
// measure stays a conservative upper bound in one respect: a patient whose
// group was later suppressed still counts as provided.
//
// The line is checked before release ("may reach"): a release that would
// take the share to the threshold (30%) or beyond is refused with
// quota_exceeded, and so is every later one to another legal entity, until an
// approved risk assessment is recorded, which raises the line for the rest of
// the year. Internal use by the institution itself does not count; it is
// recorded in the audit log and the query history with its organisation. Warnings fire as the share crosses configurable lines below 30%.
package quota

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/RoaringBitmap/roaring/v2/roaring64"

	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/metadb"
	"github.com/hospital/gateway/policy"
)

// Threshold is the Article 11 line.
const Threshold = 0.30

var migrations = []string{
	`CREATE TABLE quota_years (
		dataset TEXT NOT NULL, year BIGINT NOT NULL, static_total BIGINT NOT NULL, threshold DOUBLE PRECISION NOT NULL,
		blocked BOOLEAN NOT NULL DEFAULT FALSE, provided BIGINT NOT NULL DEFAULT 0, bitmap BYTEA, created_at TEXT NOT NULL,
		PRIMARY KEY (dataset, year))`,
	`CREATE TABLE quota_recipients (
		dataset TEXT NOT NULL, year BIGINT NOT NULL, org TEXT NOT NULL, counted BOOLEAN NOT NULL,
		provided BIGINT NOT NULL, bitmap BYTEA NOT NULL, PRIMARY KEY (dataset, year, org))`,
	`CREATE TABLE quota_events (
		query_id TEXT NOT NULL, dataset TEXT NOT NULL, year BIGINT NOT NULL, org TEXT NOT NULL, counted BOOLEAN NOT NULL,
		units BIGINT NOT NULL, added BIGINT NOT NULL, provided_after BIGINT NOT NULL, at TEXT NOT NULL)`,
	`CREATE TABLE quota_assessments (
		dataset TEXT NOT NULL, year BIGINT NOT NULL, threshold DOUBLE PRECISION NOT NULL, reference TEXT NOT NULL,
		approved_by TEXT NOT NULL, at TEXT NOT NULL)`,
}

// Config sets the warning lines.
type Config struct {
	// Warnings are shares below Threshold at which a warning fires.
	Warnings []float64
	Log      *slog.Logger
	// Alert, when set, is told of every warning and refusal.
	Alert func(ctx context.Context, dataset, kind, message string)
}

// Tracker measures and enforces the quota.
type Tracker struct {
	db     *metadb.DB
	store  *catalog.Store
	engine *engine.Engine
	cfg    Config
	ranges sync.Map // dataset -> [2]int64 unit range
	turns  sync.Map // dataset -> chan struct{}: one measured release at a time
}

// New prepares the quota tables and returns a tracker.
func New(ctx context.Context, db *metadb.DB, store *catalog.Store, eng *engine.Engine, cfg Config) (*Tracker, error) {
	if err := db.Migrate(ctx, "quota", migrations); err != nil {
		return nil, err
	}
	if len(cfg.Warnings) == 0 {
		cfg.Warnings = []float64{0.20, 0.25}
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Tracker{db: db, store: store, engine: eng, cfg: cfg}, nil
}

// Status is a dataset's quota this year, as GET /v1/quota answers it.
type Status struct {
	Dataset     string  `json:"dataset"`
	Year        int     `json:"year"`
	StaticTotal int64   `json:"static_total"`
	Provided    int64   `json:"provided"`
	Ratio       float64 `json:"ratio"`
	Threshold   float64 `json:"threshold"`
	State       string  `json:"state"`
	// Warnings are the shares below Threshold at which warnings fire.
	Warnings []float64 `json:"warnings"`
	// Recipients lists what each organisation received (distinct units).
	Recipients []Recipient `json:"recipients"`
	Events     []Event     `json:"recent_events"`
}

// Recipient is one organisation's received share.
type Recipient struct {
	Org      string `json:"org"`
	Counted  bool   `json:"counted"`
	Provided int64  `json:"provided"`
}

// Event is one release that moved the measure.
type Event struct {
	QueryID       string    `json:"query_id"`
	Org           string    `json:"org"`
	Counted       bool      `json:"counted"`
	Units         int64     `json:"units"`
	Added         int64     `json:"added"`
	ProvidedAfter int64     `json:"provided_after"`
	At            time.Time `json:"at"`
}

// Pending is a measured release waiting for commit.
type Pending struct {
	lo, hi   int64 // unit id range of the measure
	states   map[string]Status
	crossed  []string // datasets whose line this release would cross
	t        *Tracker
	org      catalog.Org
	year     int
	datasets []string
	units    *roaring64.Bitmap
	held     []chan struct{} // the datasets' turns, released by Done
}

// turn waits for the dataset's turn: measured releases of one dataset run
// one at a time in this process, from Check to Done, so that each is
// decided against the state the previous one left (its measure committed,
// or the line it crossed blocked). Processes sharing PostgreSQL are
// serialised at commit by the row lock of CommitTx.
func (t *Tracker) turn(ctx context.Context, dataset string) (chan struct{}, error) {
	v, _ := t.turns.LoadOrStore(dataset, make(chan struct{}, 1))
	ch := v.(chan struct{})
	select {
	case ch <- struct{}{}:
		return ch, nil
	case <-ctx.Done():
		return nil, fault.Wrap(fault.Timeout, ctx.Err(), "the query ran past its time limit waiting for its turn at the Article 11 measure of %s (other releases from it were being measured); nothing was spent; retry", dataset)
	}
}

// Done ends the release's turn; call it once the release has committed or
// failed. It is safe on a nil Pending and more than once.
func (p *Pending) Done() {
	if p == nil {
		return
	}
	for _, ch := range p.held {
		<-ch
	}
	p.held = nil
}

// Check is called before a query runs. For a release to another legal
// entity from core data it refuses at once when this year's line was
// reached (before any budget is spent), and otherwise returns the measure
// to fill: the caller asks the plan for its contributing units over
// Range() (privacy.Plan.MeasureUnits), hands the answer to Measure, and
// commits with CommitTx. It returns nil when the release is not measured:
// internal use never counts; it is recorded, with the organisation, in the
// audit log and the query history.
func (t *Tracker) Check(ctx context.Context, org catalog.Org, datasets []catalog.Dataset) (*Pending, error) {
	if org.Kind == policy.Internal {
		return nil, nil
	}
	p := &Pending{t: t, org: org, year: t.store.Now().Year(), states: map[string]Status{}}
	names := make([]string, 0, len(datasets))
	for _, d := range datasets {
		if d.Grade == policy.Core {
			names = append(names, d.Name)
		}
	}
	slices.Sort(names) // one order for every caller, so turns cannot deadlock
	for _, name := range names {
		ch, err := t.turn(ctx, name)
		if err != nil {
			p.Done()
			return nil, err
		}
		p.held = append(p.held, ch)
		st, err := t.state(ctx, name)
		if err != nil {
			p.Done()
			return nil, err
		}
		if st.State == "blocked" {
			p.Done()
			return nil, blockedErr(st)
		}
		p.datasets = append(p.datasets, name)
		p.states[name] = st
	}
	if len(p.datasets) == 0 {
		return nil, nil
	}
	lo, hi, err := t.unitRange(ctx, p.datasets[0])
	if err != nil {
		p.Done()
		return nil, err
	}
	p.lo, p.hi = lo, hi
	return p, nil
}

// Range is the range of privacy unit ids the answer must report.
func (p *Pending) Range() (lo, hi int64) { return p.lo, p.hi }

// Measure reads the contributing units out of an answer computed with
// MeasureUnits(Range()).
func (p *Pending) Measure(res *engine.Result) error {
	units, err := contributors(res, p.lo)
	if err != nil {
		return err
	}
	p.units = units
	return nil
}

// Block marks the line reached after CommitTx refused a release that would
// have crossed it, and raises the alert.
func (p *Pending) Block(ctx context.Context) {
	for _, name := range p.crossed {
		st := p.states[name]
		if _, err := p.t.db.Writer().ExecContext(ctx, `UPDATE quota_years SET blocked = TRUE WHERE dataset = $1 AND year = $2`, name, p.year); err != nil {
			p.t.cfg.Log.Error("block quota", "dataset", name, "err", err)
		}
		p.t.alert(ctx, name, "quota.blocked", fmt.Sprintf("%s: a release would have taken the share provided to other legal entities this year to the %.0f%% line; releases to other legal entities are refused until a risk assessment is recorded", name, 100*st.Threshold))
	}
}

// blockedErr and crossedErr are what a researcher is told: the line and
// what is needed, never the share or the patient count, which depend on
// exactly which patients earlier releases touched (auditors and stewards
// see the figures in GET /v1/quota).
func blockedErr(st Status) error {
	return fault.E(fault.QuotaExceeded, "%s: the share of this core dataset provided to other legal entities this year has reached the Article 11 line of %.0f%%; no release to another legal entity until an approved risk assessment is recorded",
		st.Dataset, 100*st.Threshold)
}

func crossedErr(st Status) error {
	return fault.E(fault.QuotaExceeded, "%s: this release could take the share of this core dataset provided to other legal entities this year to the Article 11 line of %.0f%%; a risk assessment must be approved and recorded before any further release to another legal entity",
		st.Dataset, 100*st.Threshold)
}

func (t *Tracker) alert(ctx context.Context, dataset, kind, msg string) {
	t.cfg.Log.Warn("article 11 quota", "dataset", dataset, "kind", kind, "message", msg)
	if t.cfg.Alert != nil {
		t.cfg.Alert(ctx, dataset, kind, msg)
	}
}

// CommitTx records the measured release inside the caller's transaction
// (the one that stores the answer and its audit entry), checking the line
// again on the locked row so that concurrent releases, in this process or
// another sharing PostgreSQL, cannot together pass it. It returns the
// warnings to raise once the transaction has committed (see Warn).
func (p *Pending) CommitTx(ctx context.Context, tx *sql.Tx, queryID string) ([]Warning, error) {
	t := p.t
	lock := ""
	if t.db.Dialect() == metadb.Postgres {
		lock = " FOR UPDATE"
	}
	var warnings []Warning
	for _, name := range p.datasets {
		st := p.states[name]
		union, err := loadBitmap(ctx, tx, `SELECT bitmap FROM quota_years WHERE dataset = $1 AND year = $2`+lock, name, p.year)
		if err != nil {
			return nil, err
		}
		before := int64(union.GetCardinality())
		union.Or(p.units)
		after := int64(union.GetCardinality())
		if st.Threshold < 1 && st.StaticTotal > 0 && float64(after)/float64(st.StaticTotal) >= st.Threshold {
			p.crossed = append(p.crossed, name)
			return nil, crossedErr(st)
		}
		rec, err := loadBitmap(ctx, tx, `SELECT bitmap FROM quota_recipients WHERE dataset = $1 AND year = $2 AND org = $3`, name, p.year, p.org.ID)
		if err != nil {
			return nil, err
		}
		rec.Or(p.units)
		rb, err := encode(rec)
		if err != nil {
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO quota_recipients (dataset, year, org, counted, provided, bitmap) VALUES ($1, $2, $3, TRUE, $4, $5)
			ON CONFLICT (dataset, year, org) DO UPDATE SET provided = excluded.provided, bitmap = excluded.bitmap`,
			name, p.year, p.org.ID, int64(rec.GetCardinality()), rb); err != nil {
			return nil, fmt.Errorf("store recipient measure: %w", err)
		}
		ub, err := encode(union)
		if err != nil {
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE quota_years SET provided = $1, bitmap = $2 WHERE dataset = $3 AND year = $4`,
			after, ub, name, p.year); err != nil {
			return nil, fmt.Errorf("store quota measure: %w", err)
		}
		for _, w := range t.cfg.Warnings {
			line := w * float64(st.StaticTotal)
			if float64(before) < line && float64(after) >= line {
				warnings = append(warnings, Warning{name, fmt.Sprintf("%s: share provided to other legal entities this year crossed %.0f%% (%d of %d patients)", name, 100*w, after, st.StaticTotal)})
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO quota_events (query_id, dataset, year, org, counted, units, added, provided_after, at)
			VALUES ($1, $2, $3, $4, TRUE, $5, $6, $7, $8)`,
			queryID, name, p.year, p.org.ID, int64(p.units.GetCardinality()), after-before, after, t.store.Now().Format(time.RFC3339Nano)); err != nil {
			return nil, fmt.Errorf("record quota event: %w", err)
		}
	}
	return warnings, nil
}

// Warning is a warning line crossed by a committed release.
type Warning struct{ Dataset, Message string }

// Warn raises the warnings a committed release produced.
func (p *Pending) Warn(ctx context.Context, ws []Warning) {
	for _, w := range ws {
		p.t.alert(ctx, w.Dataset, "quota.warning", w.Message)
	}
}

// Status returns a dataset's quota this year with its recipients and recent
// events, creating the year's record with its static total on first use.
func (t *Tracker) Status(ctx context.Context, dataset string) (Status, error) {
	st, err := t.state(ctx, dataset)
	if err != nil || st.State == "not_core" {
		return st, err
	}
	return t.details(ctx, st)
}

// state is Status without recipients and events: what the query path needs.
func (t *Tracker) state(ctx context.Context, dataset string) (Status, error) {
	d, err := t.store.Dataset(ctx, dataset)
	if err != nil {
		return Status{}, err
	}
	year := t.store.Now().Year()
	st := Status{Dataset: dataset, Year: year, Recipients: []Recipient{}, Events: []Event{}, Warnings: t.cfg.Warnings}
	if d.Grade != policy.Core {
		st.StaticTotal, st.Threshold, st.State = d.Units, 0, "not_core"
		return st, nil
	}
	// The static total is frozen on the year's first use: the dataset's
	// units as recorded at the end of the previous year (or at
	// registration, for the first year).
	var blocked bool
	load := func() error {
		return t.db.Writer().QueryRowContext(ctx, `SELECT static_total, threshold, blocked, provided FROM quota_years WHERE dataset = $1 AND year = $2`,
			dataset, year).Scan(&st.StaticTotal, &st.Threshold, &blocked, &st.Provided)
	}
	err = load()
	if errors.Is(err, sql.ErrNoRows) {
		_, err = t.db.Writer().ExecContext(ctx, `INSERT INTO quota_years (dataset, year, static_total, threshold, created_at) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (dataset, year) DO NOTHING`, dataset, year, d.Units, Threshold, t.store.Now().Format(time.RFC3339Nano))
		if err != nil {
			return Status{}, fmt.Errorf("open quota year of %s: %w", dataset, err)
		}
		err = load()
	}
	if err != nil {
		return Status{}, fmt.Errorf("load quota of %s: %w", dataset, err)
	}
	if st.StaticTotal > 0 {
		st.Ratio = float64(st.Provided) / float64(st.StaticTotal)
	}
	st.State = "ok"
	if len(t.cfg.Warnings) > 0 && st.Ratio >= t.cfg.Warnings[0] {
		st.State = "warning"
	}
	if blocked || (st.Threshold < 1 && st.Ratio >= st.Threshold) {
		st.State = "blocked"
	}
	return st, nil
}

func (t *Tracker) details(ctx context.Context, st Status) (Status, error) {
	dataset, year := st.Dataset, st.Year
	rows, err := t.db.Writer().QueryContext(ctx, `SELECT org, counted, provided FROM quota_recipients WHERE dataset = $1 AND year = $2 ORDER BY org`, dataset, year)
	if err != nil {
		return Status{}, fmt.Errorf("load quota recipients of %s: %w", dataset, err)
	}
	for rows.Next() {
		var r Recipient
		if err := rows.Scan(&r.Org, &r.Counted, &r.Provided); err != nil {
			rows.Close()
			return Status{}, err
		}
		st.Recipients = append(st.Recipients, r)
	}
	rows.Close()
	rows, err = t.db.Writer().QueryContext(ctx, `SELECT query_id, org, counted, units, added, provided_after, at FROM quota_events
		WHERE dataset = $1 AND year = $2 ORDER BY at DESC LIMIT 50`, dataset, year)
	if err != nil {
		return Status{}, fmt.Errorf("load quota events of %s: %w", dataset, err)
	}
	defer rows.Close()
	for rows.Next() {
		var e Event
		var at string
		if err := rows.Scan(&e.QueryID, &e.Org, &e.Counted, &e.Units, &e.Added, &e.ProvidedAfter, &at); err != nil {
			return Status{}, err
		}
		e.At, _ = time.Parse(time.RFC3339Nano, at)
		st.Events = append(st.Events, e)
	}
	return st, rows.Err()
}

// RecordAssessment records an approved risk assessment for this year: the
// line moves to threshold and releases may resume. A line of 1 means the
// assessment covers providing the whole dataset: no line for the year.
func (t *Tracker) RecordAssessment(ctx context.Context, dataset string, threshold float64, reference, approvedBy string) (Status, error) {
	st, err := t.Status(ctx, dataset)
	if err != nil {
		return Status{}, err
	}
	if st.State == "not_core" {
		return Status{}, fault.E(fault.Invalid, "%s is not core data; the Article 11 quota does not apply", dataset)
	}
	if threshold <= st.Threshold || threshold > 1 {
		return Status{}, fault.E(fault.Invalid, "the new line %.2f must be above the current %.2f and at most 1", threshold, st.Threshold)
	}
	if strings.TrimSpace(reference) == "" {
		return Status{}, fault.E(fault.Invalid, "give the reference of the approved risk assessment")
	}
	err = t.db.Tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE quota_years SET threshold = $1, blocked = FALSE WHERE dataset = $2 AND year = $3`, threshold, dataset, st.Year); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO quota_assessments (dataset, year, threshold, reference, approved_by, at) VALUES ($1, $2, $3, $4, $5, $6)`,
			dataset, st.Year, threshold, reference, approvedBy, t.store.Now().Format(time.RFC3339Nano))
		return err
	})
	if err != nil {
		return Status{}, fmt.Errorf("record risk assessment for %s: %w", dataset, err)
	}
	return t.Status(ctx, dataset)
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func loadBitmap(ctx context.Context, q querier, query string, args ...any) (*roaring64.Bitmap, error) {
	var b []byte
	err := q.QueryRowContext(ctx, query, args...).Scan(&b)
	bm := roaring64.New()
	if errors.Is(err, sql.ErrNoRows) || (err == nil && len(b) == 0) {
		return bm, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load quota bitmap: %w", err)
	}
	if _, err := bm.ReadFrom(bytes.NewReader(b)); err != nil {
		return nil, fmt.Errorf("decode quota bitmap: %w", err)
	}
	return bm, nil
}

func encode(bm *roaring64.Bitmap) ([]byte, error) {
	bm.RunOptimize()
	var buf bytes.Buffer
	if _, err := bm.WriteTo(&buf); err != nil {
		return nil, fmt.Errorf("encode quota bitmap: %w", err)
	}
	return buf.Bytes(), nil
}

// contributors reads the __units bit string (first row) of an answer.
func contributors(res *engine.Result, lo int64) (*roaring64.Bitmap, error) {
	bm := roaring64.New()
	col := -1
	for i, c := range res.Columns {
		if c.Name == "__units" {
			col = i
		}
	}
	if col < 0 {
		return nil, fmt.Errorf("the answer carries no unit measure; plan it with MeasureUnits")
	}
	if len(res.Rows) == 0 || res.Rows[0][col] == nil {
		return bm, nil
	}
	bits, _ := res.Rows[0][col].(string)
	// Add runs of set bits as ranges: contributors are mostly contiguous.
	for i := 0; i < len(bits); {
		j := strings.IndexByte(bits[i:], '1')
		if j < 0 {
			break
		}
		start := i + j
		end := strings.IndexByte(bits[start:], '0')
		if end < 0 {
			end = len(bits)
		} else {
			end += start
		}
		bm.AddRange(uint64(lo)+uint64(start), uint64(lo)+uint64(end))
		i = end
	}
	return bm, nil
}

// unitRange is the smallest and largest privacy unit id of a dataset.
func (t *Tracker) unitRange(ctx context.Context, dataset string) (int64, int64, error) {
	if r, ok := t.ranges.Load(dataset); ok {
		rr := r.([2]int64)
		return rr[0], rr[1], nil
	}
	d, err := t.store.Dataset(ctx, dataset)
	if err != nil {
		return 0, 0, err
	}
	var parts []string
	for _, tb := range d.Policy.Tables {
		u, _ := tb.UnitColumn()
		parts = append(parts, fmt.Sprintf(`SELECT min("%s")::BIGINT AS lo, max("%s")::BIGINT AS hi FROM "%s"."%s"`, u.Name, u.Name, d.Name, tb.Name))
	}
	res, err := t.engine.Query(ctx, "SELECT min(lo), max(hi) FROM ("+strings.Join(parts, " UNION ALL ")+")", 1)
	if err != nil {
		return 0, 0, fmt.Errorf("unit range of %s (the Article 11 measure needs integer privacy units): %w", dataset, err)
	}
	lo, _ := res.Rows[0][0].(int64)
	hi, _ := res.Rows[0][1].(int64)
	if res.Rows[0][0] == nil {
		lo, hi = 0, -1
	}
	t.ranges.Store(dataset, [2]int64{lo, hi})
	return lo, hi, nil
}

// Forget drops cached facts about a dataset after it is reloaded.
func (t *Tracker) Forget(dataset string) { t.ranges.Delete(dataset) }
