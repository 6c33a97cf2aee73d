package catalog

import (
	"slices"
	"time"
)

// Grants remembered: the store keeps each researcher's grants between
// queries (a memo keyed by the researcher), so that a stream of queries
// does not read and decode them from the database on every admission.
//
// A new grant and a revocation forget every entry once they have
// committed; a charge that committed puts the charged grant in place of
// the one it was charged against, or, if the memo held another state of
// it, drops the researcher's entry (chargedGrant). An entry that is stale
// anyway (a change by another process, at most grantTTL old) is safe
// where it is used: the admission only chooses the grant, and the
// reservation charges the admission's read under a condition that the
// row still holds what was read (live, unrevoked, the same sums and
// totals), reading it again under the transaction's lock when it does
// not; refusals are decided from that read alone.

// grantTTL bounds how long a researcher's grants are trusted without
// reading them again.
const grantTTL = 5 * time.Second

// maxGrantEntries bounds the researchers remembered.
const maxGrantEntries = 10000

func newGrantMemo() *memo[[]Grant] { return newMemo(grantTTL, maxGrantEntries, cloneGrants) }

// chargedGrant records a committed charge: after is the grant charged
// against before.
func (s *Store) chargedGrant(before, after Grant) {
	s.grants.update(after.Researcher, func(gs *[]Grant) bool {
		i := slices.IndexFunc(*gs, func(g Grant) bool { return g.ID == after.ID })
		if i < 0 || (*gs)[i].Spent != before.Spent {
			return false
		}
		(*gs)[i] = cloneGrant(after)
		return true
	})
}

func cloneGrants(gs []Grant) []Grant {
	out := make([]Grant, len(gs))
	for i, g := range gs {
		out[i] = cloneGrant(g)
	}
	return out
}

// cloneGrant copies what a grant shares: its lists and its revocation.
func cloneGrant(g Grant) Grant {
	g.Datasets, g.Columns = slices.Clone(g.Datasets), slices.Clone(g.Columns)
	if g.RevokedAt != nil {
		t := *g.RevokedAt
		g.RevokedAt = &t
	}
	return g
}

// Datasets remembered: the store keeps each dataset's row, decoded,
// between a researcher's queries (a memo keyed by the researcher and the
// name, so that one researcher's speed does not tell whether another
// read the dataset lately: nothing a memo holds is shared between
// researchers). Every change to a dataset
// (a registration or reload, a protection change proposed or verified)
// forgets every entry once it has committed, before its caller is
// answered, so a query admitted after a steward's change was accepted
// reads the new grade and policy.

// datasetTTL bounds how long a dataset's row is trusted without reading
// it again.
const datasetTTL = 5 * time.Second

// maxDatasetEntries bounds the (researcher, dataset) pairs remembered.
const maxDatasetEntries = 10000

func newDatasetMemo() *memo[Dataset] {
	return newMemo(datasetTTL, maxDatasetEntries, func(d Dataset) Dataset {
		d.Policy = d.Policy.Clone()
		return d
	})
}
