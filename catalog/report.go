package catalog

import (
	"context"
	"fmt"
)

// ReportLine is one dataset in the Article 6 report to the authority: source,
// category, grade, scale, purpose and method of processing, responsible
// party, cross-border transmission and protection measures. It never holds
// a data value.
type ReportLine struct {
	Dataset      string `json:"dataset"`
	Source       string `json:"source"`
	Category     string `json:"category"`
	Grade        Grade  `json:"grade"`
	Scale        string `json:"scale"`
	Purpose      string `json:"purpose"`
	Method       string `json:"processing_method"`
	Responsible  string `json:"responsible_party"`
	CrossBorder  string `json:"cross_border"`
	Protection   string `json:"protection_measures"`
	NeedsRegrade bool   `json:"needs_regrade"`
	ExactAnswers bool   `json:"exact_answers"`
	// GradeHistory and Changes are filled by Store.Report: every grade
	// the dataset has had, and every proposal to change its protection
	// with its proposer, verifier and outcome.
	GradeHistory []GradeChange      `json:"grade_history,omitempty"`
	Changes      []ProtectionChange `json:"protection_changes,omitempty"`
}

// Report builds the Article 6 report for every registered dataset, with
// its grade history and protection changes.
func (s *Store) Report(ctx context.Context) ([]ReportLine, error) {
	ds, err := s.Datasets(ctx)
	if err != nil {
		return nil, err
	}
	out := Report(ds)
	for i := range out {
		if out[i].GradeHistory, err = s.GradeHistory(ctx, out[i].Dataset); err != nil {
			return nil, err
		}
		if out[i].Changes, err = s.ProtectionChanges(ctx, out[i].Dataset); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Report builds the Article 6 report for datasets.
func Report(ds []Dataset) []ReportLine {
	out := []ReportLine{}
	for _, d := range ds {
		out = append(out, ReportLine{
			Dataset: d.Name, Source: d.Source, Category: d.Category, Grade: d.Grade,
			Scale:   fmt.Sprintf("%d rows, %d patients, %d tables", d.Rows, d.Units, len(d.Policy.Tables)),
			Purpose: d.Purpose, Method: d.Method, Responsible: d.Responsible, CrossBorder: d.CrossBorder,
			Protection: d.Protection, NeedsRegrade: d.NeedsRegrade, ExactAnswers: d.ExactAnswers,
		})
	}
	return out
}
