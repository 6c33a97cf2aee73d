// Package alerts detects abnormal use of the gateway (Art. 12 of the 2026
// Measures) and tells people about it (Art. 25): bursts of queries, repeated
// refusals (probing), budget burned faster than policy allows, pairs of
// queries that differ only in their constants (differencing attacks), and
// queries outside working hours. Alerts are stored in the metadata store,
// listed for auditors, written to the server log and posted to a webhook;
// an auditor acknowledges an alert or opens an incident record from it.
//
// Detection runs on each query's outcome, in memory, per gateway process;
// what it raises is shared through the store.
package alerts

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/metadb"
)

// Policy sets the detectors' thresholds. A zero field takes its default.
type Policy struct {
	BurstQueries   int           // queries by one person ...
	BurstWindow    time.Duration // ... within this window
	ProbeRefusals  int           // refusals of one person ...
	ProbeWindow    time.Duration // ... within this window
	BurnShare      float64       // share of a grant's epsilon ...
	BurnWindow     time.Duration // ... spent within this window
	DiffWindow     time.Duration // queries of the same shape within this window
	WorkingHours   [2]int        // [start, end) hour, local; {0, 0} disables
	Cooldown       time.Duration // one alert per kind and person per cooldown
	WebhookTimeout time.Duration
}

func (p Policy) withDefaults() Policy {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&p.BurstQueries, 60)
	defd(&p.BurstWindow, time.Minute)
	def(&p.ProbeRefusals, 5)
	defd(&p.ProbeWindow, 10*time.Minute)
	if p.BurnShare <= 0 {
		p.BurnShare = 0.5
	}
	defd(&p.BurnWindow, time.Hour)
	defd(&p.DiffWindow, 24*time.Hour)
	defd(&p.Cooldown, 10*time.Minute)
	defd(&p.WebhookTimeout, 5*time.Second)
	return p
}

// Event is one query outcome.
type Event struct {
	Time    time.Time
	Person  string
	Dataset string
	// Outcome is "ok" or the refusal's error code.
	Outcome string
	// Shape and Key identify the question: same Shape and different Key
	// means the same query with other constants.
	Shape, Key string
	GrantID    string
	Epsilon    float64 // spent by this query
	GrantTotal float64
}

// Alert is a stored alert.
type Alert struct {
	ID        string          `json:"id"`
	Kind      string          `json:"kind"`
	Person    string          `json:"person"`
	Dataset   string          `json:"dataset"`
	Message   string          `json:"message"`
	Detail    json.RawMessage `json:"detail"`
	State     string          `json:"state"` // open, acknowledged, incident
	By        string          `json:"handled_by,omitempty"`
	Incident  string          `json:"incident_id,omitempty"`
	CreatedAt time.Time       `json:"created_at"`
}

var migrations = []string{
	`CREATE TABLE alerts (id TEXT PRIMARY KEY, kind TEXT NOT NULL, person TEXT NOT NULL, dataset TEXT NOT NULL,
		message TEXT NOT NULL, detail TEXT NOT NULL, state TEXT NOT NULL, handled_by TEXT, incident_id TEXT, created_at TEXT NOT NULL)`,
	`CREATE TABLE incidents (id TEXT PRIMARY KEY, alert_id TEXT NOT NULL, opened_by TEXT NOT NULL, summary TEXT NOT NULL,
		state TEXT NOT NULL, created_at TEXT NOT NULL)`,
}

// Config wires an Alerter.
type Config struct {
	Policy  Policy
	Log     *slog.Logger
	Webhook string // URL that receives each alert as JSON; "" disables
	Now     func() time.Time
}

// Alerter runs the detectors and delivers alerts.
type Alerter struct {
	db   *metadb.DB
	cfg  Config
	mu   sync.Mutex
	seen map[string][]Event // person -> recent events, oldest first
	// shapes: person -> shape -> the latest keys answered, for the
	// differencing detector, which would otherwise compare every
	// answer with each of the person's recent events.
	shapes map[string]map[string]*recentKeys
	spent  map[string]*burn     // grant -> recent spends
	last   map[string]time.Time // kind/person -> last alert
	swept  time.Time            // when sweep last ran
	wg     sync.WaitGroup       // webhook deliveries in flight
	http   *http.Client
}

// New prepares the alert tables.
func New(ctx context.Context, db *metadb.DB, cfg Config) (*Alerter, error) {
	if err := db.Migrate(ctx, "alerts", migrations); err != nil {
		return nil, err
	}
	cfg.Policy = cfg.Policy.withDefaults()
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Alerter{db: db, cfg: cfg, seen: map[string][]Event{}, shapes: map[string]map[string]*recentKeys{}, spent: map[string]*burn{}, last: map[string]time.Time{},
		http: &http.Client{Timeout: cfg.Policy.WebhookTimeout}}, nil
}

// Close waits for webhook deliveries in flight.
func (a *Alerter) Close() { a.wg.Wait() }

type finding struct {
	kind, msg string
	detail    map[string]any
}

// burn is a grant's spends within the burn window, oldest first, and
// their sum, kept as spends come and go: a grant answering hundreds of
// queries a second would otherwise be summed over again at each one.
type burn struct {
	spends []spend
	sum    float64
}

type spend struct {
	at      time.Time
	epsilon float64
}

// add records a spend of epsilon at t and returns the sum of the spends
// within window before t.
func (b *burn) add(t time.Time, epsilon float64, window time.Duration) float64 {
	b.spends = append(b.spends, spend{t, epsilon})
	b.sum += epsilon
	i := 0
	for i < len(b.spends) && t.Sub(b.spends[i].at) > window {
		b.sum -= b.spends[i].epsilon
		i++
	}
	b.spends = b.spends[i:]
	if len(b.spends) == 1 {
		b.sum = b.spends[0].epsilon // what subtracting left over goes
	}
	return b.sum
}

// recentKeys are the two latest distinct keys of a person's answered
// queries of one shape, latest first, and when each was last answered:
// enough to tell when a key other than a given one was last answered.
type recentKeys struct {
	key  [2]string
	time [2]time.Time
}

// other is when a key other than key was last answered; zero if never.
func (r *recentKeys) other(key string) time.Time {
	if r.key[0] != key {
		return r.time[0]
	}
	return r.time[1]
}

func (r *recentKeys) add(key string, t time.Time) {
	if r.key[0] != key {
		r.key[1], r.time[1] = r.key[0], r.time[0]
		r.key[0] = key
	}
	r.time[0] = t
}

// maxShapes bounds the shapes remembered per person; past it, those not
// answered within the differencing window are forgotten, and if all
// were, all are.
const maxShapes = 1000

// keysOf is the person's recent keys of shape, kept in a.shapes; a.mu is
// held.
func (a *Alerter) keysOf(person, shape string, now time.Time, window time.Duration) *recentKeys {
	m := a.shapes[person]
	if m == nil {
		m = map[string]*recentKeys{}
		a.shapes[person] = m
	}
	if k, ok := m[shape]; ok {
		return k
	}
	if len(m) >= maxShapes {
		for s, k := range m {
			if now.Sub(k.time[0]) > window {
				delete(m, s)
			}
		}
		if len(m) >= maxShapes {
			clear(m)
		}
	}
	k := &recentKeys{}
	m[shape] = k
	return k
}

// sweepEvery is how often Observe forgets the state no detector can use
// any more (see sweep).
const sweepEvery = time.Hour

// sweep forgets, as of now, what no detector reads again: a person's
// events once the newest is past every detector's window, their shapes'
// keys past the differencing window, a grant's spends past the burn
// window and last alerts past the cooldown. Each detector would find the
// same in what is forgotten as in nothing, so findings do not change;
// without it, the state of every person and grant ever seen would stay
// for the life of the process. a.mu is held.
func (a *Alerter) sweep(now time.Time) {
	p := a.cfg.Policy
	keep := max(p.BurstWindow, p.ProbeWindow, p.DiffWindow)
	for person, events := range a.seen {
		if len(events) == 0 || now.Sub(events[len(events)-1].Time) > keep {
			delete(a.seen, person)
		}
	}
	for person, m := range a.shapes {
		for shape, k := range m {
			if now.Sub(k.time[0]) > p.DiffWindow {
				delete(m, shape)
			}
		}
		if len(m) == 0 {
			delete(a.shapes, person)
		}
	}
	for grant, b := range a.spent {
		if len(b.spends) == 0 || now.Sub(b.spends[len(b.spends)-1].at) > p.BurnWindow {
			delete(a.spent, grant)
		}
	}
	for key, t := range a.last {
		if now.Sub(t) >= p.Cooldown {
			delete(a.last, key)
		}
	}
}

// Observe runs the detectors on one query outcome and raises what they find.
func (a *Alerter) Observe(ctx context.Context, e Event) {
	if e.Time.IsZero() {
		e.Time = a.cfg.Now()
	}
	p := a.cfg.Policy
	var found []finding
	a.mu.Lock()
	if e.Time.Sub(a.swept) >= sweepEvery {
		a.sweep(e.Time)
		a.swept = e.Time
	}
	events := append(a.seen[e.Person], e)
	keep := max(p.BurstWindow, p.ProbeWindow, p.DiffWindow)
	for len(events) > 0 && e.Time.Sub(events[0].Time) > keep {
		events = events[1:]
	}
	if len(events) > 1000 {
		events = events[len(events)-1000:]
	}
	a.seen[e.Person] = events
	// A finding still cooling down from its last alert is not raised, so
	// it is not looked for or written.
	due := func(kind string) bool {
		t, ok := a.last[kind+"/"+e.Person]
		return !ok || e.Time.Sub(t) >= p.Cooldown
	}
	// within counts the events of the last window that keep says to.
	within := func(window time.Duration, keep func(Event) bool) int {
		n := 0
		for _, x := range events {
			if e.Time.Sub(x.Time) <= window && keep(x) {
				n++
			}
		}
		return n
	}
	if due("burst") {
		if queries := within(p.BurstWindow, func(Event) bool { return true }); queries > p.BurstQueries {
			found = append(found, finding{"burst", fmt.Sprintf("%s sent %d queries within %s", e.Person, queries, p.BurstWindow),
				map[string]any{"queries": queries, "window": p.BurstWindow.String()}})
		}
	}
	if e.Outcome != "ok" && due("probing") {
		if refusals := within(p.ProbeWindow, func(x Event) bool { return x.Outcome != "ok" }); refusals >= p.ProbeRefusals {
			found = append(found, finding{"probing", fmt.Sprintf("%s had %d queries refused within %s (last: %s)", e.Person, refusals, p.ProbeWindow, e.Outcome),
				map[string]any{"refusals": refusals, "window": p.ProbeWindow.String()}})
		}
	}
	if e.Outcome == "ok" && e.Shape != "" {
		keys := a.keysOf(e.Person, e.Shape, e.Time, p.DiffWindow)
		if t := keys.other(e.Key); !t.IsZero() && e.Time.Sub(t) <= p.DiffWindow && due("differencing") {
			found = append(found, finding{"differencing", fmt.Sprintf("%s asked the same query with different constants within %s; the difference of the answers may single out patients", e.Person, p.DiffWindow),
				map[string]any{"dataset": e.Dataset}})
		}
		keys.add(e.Key, e.Time)
	}
	if e.Outcome == "ok" && e.GrantID != "" && e.Epsilon > 0 && e.GrantTotal > 0 {
		b := a.spent[e.GrantID]
		if b == nil {
			b = &burn{}
			a.spent[e.GrantID] = b
		}
		sum := b.add(e.Time, e.Epsilon, p.BurnWindow)
		if due("budget_burn") {
			if sum/e.GrantTotal >= p.BurnShare {
				found = append(found, finding{"budget_burn", fmt.Sprintf("grant %s spent %.0f%% of its epsilon within %s", e.GrantID, 100*sum/e.GrantTotal, p.BurnWindow),
					map[string]any{"grant_id": e.GrantID, "epsilon": sum, "window": p.BurnWindow.String()}})
			}
		}
	}
	if h := p.WorkingHours; h != [2]int{} {
		if hour := e.Time.Hour(); (hour < h[0] || hour >= h[1]) && due("off_hours") {
			found = append(found, finding{"off_hours", fmt.Sprintf("%s queried at %s, outside working hours %02d:00-%02d:00", e.Person, e.Time.Format("15:04"), h[0], h[1]), nil})
		}
	}
	for _, f := range found {
		a.last[f.kind+"/"+e.Person] = e.Time
	}
	a.mu.Unlock()
	for _, f := range found {
		if _, err := a.Raise(ctx, f.kind, e.Person, e.Dataset, f.msg, f.detail); err != nil {
			a.cfg.Log.Error("raise alert", "kind", f.kind, "err", err)
		}
	}
}

// Raise stores an alert and delivers it to the log and the webhook.
func (a *Alerter) Raise(ctx context.Context, kind, person, dataset, msg string, detail map[string]any) (Alert, error) {
	d, _ := json.Marshal(detail)
	al := Alert{ID: metadb.NewID("alr"), Kind: kind, Person: person, Dataset: dataset, Message: msg, Detail: d, State: "open", CreatedAt: a.cfg.Now().UTC()}
	_, err := a.db.Writer().ExecContext(context.WithoutCancel(ctx), `INSERT INTO alerts (id, kind, person, dataset, message, detail, state, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, al.ID, al.Kind, al.Person, al.Dataset, al.Message, string(al.Detail), al.State, al.CreatedAt.Format(time.RFC3339Nano))
	if err != nil {
		return Alert{}, fmt.Errorf("store alert: %w", err)
	}
	a.cfg.Log.Warn("alert", "id", al.ID, "kind", kind, "person", person, "dataset", dataset, "message", msg)
	if a.cfg.Webhook != "" {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.deliver(al)
		}()
	}
	return al, nil
}

func (a *Alerter) deliver(al Alert) {
	b, _ := json.Marshal(al)
	resp, err := a.http.Post(a.cfg.Webhook, "application/json", bytes.NewReader(b))
	if err != nil {
		a.cfg.Log.Error("alert webhook", "id", al.ID, "err", err)
		return
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		a.cfg.Log.Error("alert webhook", "id", al.ID, "status", resp.StatusCode)
	}
}

// Send posts v as JSON to the webhook and waits for the answer: for
// messages that are not alerts, such as the audit log's signed checkpoints,
// which auditors keep outside the gateway. Without a webhook it does
// nothing.
func (a *Alerter) Send(ctx context.Context, v any) error {
	if a.cfg.Webhook == "" {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode webhook message: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.cfg.Webhook, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("webhook request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.http.Do(req)
	if err != nil {
		return fmt.Errorf("post to webhook: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("post to webhook: status %d", resp.StatusCode)
	}
	return nil
}

// List returns alerts, newest first; state "" lists all.
func (a *Alerter) List(ctx context.Context, state string) ([]Alert, error) {
	rows, err := a.db.Writer().QueryContext(ctx, `SELECT id, kind, person, dataset, message, detail, state, coalesce(handled_by, ''), coalesce(incident_id, ''), created_at
		FROM alerts WHERE $1 = '' OR state = $1 ORDER BY created_at DESC LIMIT 1000`, state)
	if err != nil {
		return nil, fmt.Errorf("list alerts: %w", err)
	}
	defer rows.Close()
	out := []Alert{}
	for rows.Next() {
		var al Alert
		var d, created string
		if err := rows.Scan(&al.ID, &al.Kind, &al.Person, &al.Dataset, &al.Message, &d, &al.State, &al.By, &al.Incident, &created); err != nil {
			return nil, fmt.Errorf("list alerts: %w", err)
		}
		al.Detail = json.RawMessage(d)
		al.CreatedAt, _ = time.Parse(time.RFC3339Nano, created)
		out = append(out, al)
	}
	return out, rows.Err()
}

// Acknowledge marks an open alert as seen by an auditor.
func (a *Alerter) Acknowledge(ctx context.Context, id, by string) error {
	res, err := a.db.Writer().ExecContext(ctx, `UPDATE alerts SET state = 'acknowledged', handled_by = $1 WHERE id = $2 AND state = 'open'`, by, id)
	if err != nil {
		return fmt.Errorf("acknowledge alert: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fault.E(fault.Conflict, "alert %s does not exist or is not open", id)
	}
	return nil
}

// OpenIncident opens an incident record from an alert (Art. 25).
func (a *Alerter) OpenIncident(ctx context.Context, alertID, by, summary string) (string, error) {
	if summary == "" {
		return "", fault.E(fault.Invalid, "summarise the incident")
	}
	id := metadb.NewID("inc")
	err := a.db.Tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE alerts SET state = 'incident', handled_by = $1, incident_id = $2 WHERE id = $3 AND state <> 'incident'`, by, id, alertID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fault.E(fault.Conflict, "alert %s does not exist or already has an incident", alertID)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO incidents (id, alert_id, opened_by, summary, state, created_at) VALUES ($1, $2, $3, $4, 'open', $5)`,
			id, alertID, by, summary, a.cfg.Now().UTC().Format(time.RFC3339Nano))
		return err
	})
	var fe *fault.Error
	if err != nil && !errors.As(err, &fe) {
		err = fmt.Errorf("open incident: %w", err)
	}
	return id, err
}
