// Package demo sets up the demo hospital of CONTRACT.md: the column policy a
// steward would declare for the synthetic demo_hospital dataset, its
// Article 6 description, and the demo people (one per role, and three
// researchers from the hospital itself, a domestic partner and an overseas
// organisation) with their grants, obtained through the real two-step
// approval. The gateway's demo command and the tests share it.
package demo

import (
	"context"
	"fmt"
	"time"

	"github.com/hospital/gateway/accountant"
	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/demo/synth"
	"github.com/hospital/gateway/policy"
	"github.com/hospital/gateway/privacy"
)

// Dataset is the demo dataset's name.
const Dataset = "demo_hospital"

// Policy is the column policy of demo_hospital.
func Policy() policy.Policy {
	bound := func(lo, hi float64) (*float64, *float64) { return &lo, &hi }
	ageMin, ageMax := bound(0, 110)
	// Values range up to 365 days and 1,000,000 yuan (the domain, which
	// registration checks), but a handful of outliers should not set the
	// noise for everyone: the steward clamps stays at 60 days and costs at
	// 100,000 yuan, and what clamping cuts is estimated in each answer.
	losMin, losMax := bound(0, 60)
	costMin, costMax := bound(0, 100000)
	losLo, losHi := bound(0, synth.MaxLengthOfStay)
	costLo, costHi := bound(0, synth.MaxCostYuan)
	pub := synth.PublicCategories()
	return policy.Policy{
		Tables: []policy.Table{
			{Name: "patients", OneRowPerUnit: true, Columns: []policy.Column{
				{Name: "patient_id", Type: "BIGINT", Role: policy.Unit},
				{Name: "name", Type: "VARCHAR", Role: policy.Identifier},
				{Name: "national_id", Type: "VARCHAR", Role: policy.Identifier},
				{Name: "phone", Type: "VARCHAR", Role: policy.Identifier},
				{Name: "birth_date", Type: "DATE", Role: policy.QuasiIdentifier},
				{Name: "sex", Type: "VARCHAR", Role: policy.QuasiIdentifier, Public: pub["sex"]},
				{Name: "age", Type: "INTEGER", Role: policy.QuasiIdentifier, Min: ageMin, Max: ageMax, MaxDistinct: 111},
				{Name: "province", Type: "VARCHAR", Role: policy.QuasiIdentifier, Public: pub["province"]},
				{Name: "is_pregnant", Type: "BOOLEAN", Role: policy.SpecialGroup},
				{Name: "hiv_positive", Type: "BOOLEAN", Role: policy.SpecialGroup},
				{Name: "mental_disorder", Type: "BOOLEAN", Role: policy.SpecialGroup},
				{Name: "deceased", Type: "BOOLEAN", Role: policy.SpecialGroup},
			}},
			{Name: "encounters", Columns: []policy.Column{
				{Name: "encounter_id", Type: "BIGINT", Role: policy.Identifier},
				{Name: "patient_id", Type: "BIGINT", Role: policy.Unit},
				{Name: "admit_date", Type: "DATE", Role: policy.Attribute, MaxDistinct: 2200}, // 2020 to 2025
				{Name: "department", Type: "VARCHAR", Role: policy.Attribute, Public: pub["department"]},
				{Name: "diagnosis_icd10", Type: "VARCHAR", Role: policy.Sensitive, MaxDistinct: 200},
				{Name: "length_of_stay_days", Type: "INTEGER", Role: policy.Attribute, Min: losMin, Max: losMax, DomainMin: losLo, DomainMax: losHi, MaxDistinct: 366},
				{Name: "cost_yuan", Type: "DOUBLE", Role: policy.Attribute, Min: costMin, Max: costMax, DomainMin: costLo, DomainMax: costHi},
			}},
		},
		// At most: a patient adds 50 encounters to one group and touches 4
		// groups (200 encounters in all), which holds all but the very
		// longest stays on record. These are maxima: each query's bound is
		// chosen below them from a noisy histogram of encounters per
		// patient (see privacy), and per-patient attributes (sex,
		// province) need no bound.
		Contribution: policy.Contribution{MaxGroups: 12, MaxRows: 50},
		K:            10, SpecialK: 20, SpecialShare: 0.5,
	}
}

// Description is demo_hospital's catalog entry for the given scale.
func Description(rows, patients int64) catalog.Dataset {
	return catalog.Dataset{
		Name: Dataset, Grade: policy.Core, Source: "synthetic hospital information system extract (seeded generator)",
		Category: "clinical: patient demographics and encounters", Purpose: "research on utilisation and outcomes",
		Method:      "aggregate queries under differential privacy inside the gateway; no row leaves the domain",
		Responsible: "Data Security Office, Demo Hospital", CrossBorder: "none",
		Protection: "SM4-GCM encryption at rest; identifiers never released; user-level differential privacy; " +
			"k-anonymity suppression; two-step approval; hash-chained audit log",
		Policy: Policy(), Rows: rows, Units: patients,
	}
}

// Recorder is told of every governance step the seeding performs.
type Recorder func(ctx context.Context, actor, action string, fields map[string]any)

// Options tune Seed.
type Options struct {
	// Epsilon is each researcher's total budget (CONTRACT.md: 3.0).
	Epsilon float64
	Delta   float64
}

// Seed registers demo_hospital with d's scale and creates the demo
// organisations, people, tokens and grants. It returns each person's token.
func Seed(ctx context.Context, store *catalog.Store, d catalog.Dataset, opts Options, record Recorder) (map[string]string, error) {
	if opts.Epsilon == 0 {
		opts.Epsilon = 3.0
	}
	if opts.Delta == 0 {
		// What the k rules of a core grant's expected queries need (see
		// release.DefaultDelta): 2e-5.
		opts.Delta = accountant.DeltaFor(privacy.DefaultLimits.PartitionDelta, policy.DefaultGradeRules()[policy.Core].Expected())
	}
	if record == nil {
		record = func(context.Context, string, string, map[string]any) {}
	}
	const steward, approver = "steward", "approver"
	orgs := []catalog.Org{
		{ID: "demo-hospital", Name: "Demo Hospital", Kind: policy.Internal},
		{ID: "partner-institute", Name: "Partner Medical Research Institute", Kind: policy.Domestic},
		{ID: "overseas-lab", Name: "Overseas Health Analytics Ltd", Kind: policy.Overseas},
	}
	for _, o := range orgs {
		if err := store.PutOrg(ctx, o); err != nil {
			return nil, err
		}
	}
	people := []struct {
		id, name, org string
		roles         []catalog.PersonRole
	}{
		{"admin", "Gateway Administrator", "demo-hospital", []catalog.PersonRole{catalog.Admin}},
		{steward, "Data Steward", "demo-hospital", []catalog.PersonRole{catalog.Steward}},
		{approver, "Leadership Approver", "demo-hospital", []catalog.PersonRole{catalog.Approver}},
		{"auditor", "Auditor", "demo-hospital", []catalog.PersonRole{catalog.Auditor}},
		{"researcher", "External Researcher", "partner-institute", []catalog.PersonRole{catalog.Researcher}},
		{"researcher_internal", "Internal Researcher", "demo-hospital", []catalog.PersonRole{catalog.Researcher}},
		{"researcher_overseas", "Overseas Researcher", "overseas-lab", []catalog.PersonRole{catalog.Researcher}},
	}
	tokens := map[string]string{}
	for _, p := range people {
		err := store.CreatePerson(ctx, catalog.Person{ID: p.id, Name: p.name, Org: catalog.Org{ID: p.org}, Roles: p.roles, Active: true})
		if err != nil {
			return nil, err
		}
		_, tok, err := store.IssueToken(ctx, p.id, "demo")
		if err != nil {
			return nil, err
		}
		tokens[p.id] = tok
		record(ctx, "admin", "person.create", map[string]any{"person": p.id, "roles": p.roles, "org": p.org})
	}
	if err := store.PutDataset(ctx, d, steward); err != nil {
		return nil, err
	}
	record(ctx, steward, "dataset.register", map[string]any{"dataset": d.Name, "grade": d.Grade, "rows": d.Rows, "units": d.Units})
	for _, r := range []string{"researcher", "researcher_internal", "researcher_overseas"} {
		req, err := store.CreateRequest(ctx, catalog.AccessRequest{
			Researcher: r, Datasets: []string{d.Name}, Purpose: "demo study of encounter patterns",
			Method: "aggregate SQL through the gateway", Epsilon: opts.Epsilon, Delta: opts.Delta,
			ExpiresAt: time.Now().AddDate(1, 0, 0),
		})
		if err != nil {
			return nil, err
		}
		if _, err := store.Approve(ctx, req.ID, steward, nil); err != nil {
			return nil, fmt.Errorf("approve demo request: %w", err)
		}
		req, err = store.Verify(ctx, req.ID, approver, nil)
		if err != nil {
			return nil, fmt.Errorf("verify demo request: %w", err)
		}
		record(ctx, approver, "request.verify", map[string]any{"request_id": req.ID, "grant_id": req.GrantID, "researcher": r})
	}
	return tokens, nil
}
