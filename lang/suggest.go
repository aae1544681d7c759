package lang

import "strings"

// synonyms are names people write for a field strata calls otherwise; they are
// suggested when edit distance finds nothing closer.
var synonyms = map[string]string{
	"format": "type",
	"kind":   "type",
}

// nearest returns the candidate closest to name, when it is close enough to be
// what the user meant: at most a third of the name's length in edits (at least
// one), an adjacent swap counting as one edit. Ties go to the first candidate in
// order.
func nearest(name string, candidates []string) string {
	best, bestD := "", -1
	limit := max(1, len([]rune(name))/3)
	for _, c := range candidates {
		if c == name {
			continue
		}
		d := editDistance(strings.ToLower(name), strings.ToLower(c))
		if d <= limit && (bestD < 0 || d < bestD) {
			best, bestD = c, d
		}
	}
	if best == "" {
		if s, ok := synonyms[name]; ok {
			for _, c := range candidates {
				if c == s {
					return s
				}
			}
		}
	}
	return best
}

// Suggest returns the candidate a user most likely meant by name (a typo of it,
// or a common synonym), or "" when none is close: the rule behind every "did you
// mean" strata prints.
func Suggest(name string, candidates []string) string { return nearest(name, candidates) }

// didYouMean is "; did you mean X?" for the nearest candidate, or "".
func didYouMean(name string, candidates []string) string {
	if n := nearest(name, candidates); n != "" {
		return "; did you mean " + n + "?"
	}
	return ""
}

// editDistance is the optimal string alignment distance: insertions, deletions,
// substitutions and swaps of adjacent characters each cost one.
func editDistance(a, b string) int {
	s, t := []rune(a), []rune(b)
	prev2 := make([]int, len(t)+1)
	prev := make([]int, len(t)+1)
	cur := make([]int, len(t)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(s); i++ {
		cur[0] = i
		for j := 1; j <= len(t); j++ {
			cost := 1
			if s[i-1] == t[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && s[i-1] == t[j-2] && s[i-2] == t[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(t)]
}
