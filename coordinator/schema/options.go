package schema

// WithoutExtensions is list without its EXTENSION entries and the COMMENT
// entries on them (--skip-extensions). The objects that belong to an
// extension are never in a dump (pg_dump leaves them to CREATE EXTENSION),
// and objects that only use one stay: the target must have the extension.
// left are the entries taken out, in list order.
func WithoutExtensions(list []Entry) (kept, left []Entry) {
	ext := map[int]bool{}
	for _, e := range list {
		if e.Desc == "EXTENSION" {
			ext[e.DumpID] = true
		}
	}
	if len(ext) == 0 {
		return list, nil
	}
	kept = make([]Entry, 0, len(list))
	for _, e := range list {
		if ext[e.DumpID] || e.Desc == "COMMENT" && dependsOnAny(e, ext) {
			left = append(left, e)
			continue
		}
		kept = append(kept, e)
	}
	return kept, left
}

// WithoutComments is list without its COMMENT entries (--no-comments).
func WithoutComments(list []Entry) []Entry {
	kept := make([]Entry, 0, len(list))
	for _, e := range list {
		if e.Desc != "COMMENT" {
			kept = append(kept, e)
		}
	}
	return kept
}

func dependsOnAny(e Entry, ids map[int]bool) bool {
	for _, d := range e.Deps {
		if ids[d] {
			return true
		}
	}
	return false
}
