package verify

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// The results of a verify with Options.Dir are kept in one bbolt file, so
// that a verify interrupted (or rerun after a fix) compares again only what
// was not found equal. The file is verify's own, never the coordinator's
// store: verify shares nothing with the copy path.
//
//	verify.db
//	├── meta
//	│   ├── schema_version   -> "1"
//	│   └── pair             -> JSON statePair (which databases were compared)
//	├── tables               -> table display name            -> JSON tablePlan
//	└── ranges               -> table display name, 0, uint32 -> JSON rangeResult
var (
	bucketMeta   = []byte("meta")
	bucketTables = []byte("tables")
	bucketRanges = []byte("ranges")

	keySchemaVersion = []byte("schema_version")
	keyPair          = []byte("pair")

	allBuckets = [][]byte{bucketMeta, bucketTables, bucketRanges}
)

// stateVersion is the layout this code reads and writes.
const stateVersion = "1"

// StateFile is the name of the results file inside Options.Dir.
const StateFile = "verify.db"

var (
	// ErrStateLocked means another verify has the results file open.
	ErrStateLocked = errors.New("verify: the results file is in use by another verify")
	// ErrOtherPair means the results file holds a verify of other databases.
	ErrOtherPair = errors.New("verify: the results file belongs to a verify of other databases")
)

// statePair names the two databases by server and database name, never
// with credentials.
type statePair struct {
	Source string `json:"source"`
	Target string `json:"target"`
}

// tablePlan is how one table's rows are cut into ranges. It is kept so that
// a resumed verify cuts exactly the same ranges as the run it resumes.
type tablePlan struct {
	// Key is the integer key column ranges are cut on; "" compares the
	// table whole, as one range.
	Key string `json:"key,omitempty"`
	// Bounds are the cut points: range i is [Bounds[i-1], Bounds[i]), the
	// first and last are open-ended.
	Bounds []int64 `json:"bounds,omitempty"`
}

// rangeResult is one range's count and checksum on each side.
type rangeResult struct {
	Source tableSum  `json:"source"`
	Target tableSum  `json:"target"`
	At     time.Time `json:"at"`
}

func (r rangeResult) equal() bool { return r.Source == r.Target }

// state is an open results file; a nil *state keeps nothing.
type state struct {
	db *bolt.DB
}

// pairOf names a connection string's server and database.
func pairOf(uri string) string {
	cfg, err := pgx.ParseConfig(uri)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%s:%d/%s", cfg.Host, cfg.Port, cfg.Database)
}

// openState opens (creating) DIR/verify.db; restart empties it first. It
// refuses a file that holds a verify of another pair of databases.
func openState(dir string, restart bool, pair statePair) (*state, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("verify: create directory %s: %w", dir, err)
	}
	path := filepath.Join(dir, StateFile)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open %s: %w", path, ErrStateLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("verify: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if restart {
			for _, name := range allBuckets {
				if tx.Bucket(name) != nil {
					if err := tx.DeleteBucket(name); err != nil {
						return err
					}
				}
			}
		}
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keySchemaVersion); v == nil {
			if err := meta.Put(keySchemaVersion, []byte(stateVersion)); err != nil {
				return err
			}
		} else if string(v) != stateVersion {
			return fmt.Errorf("verify: %s has layout %q, this binary reads %q: use --restart or another --dir", path, v, stateVersion)
		}
		if v := meta.Get(keyPair); v != nil {
			var had statePair
			if err := json.Unmarshal(v, &had); err != nil {
				return err
			}
			if had != pair {
				return fmt.Errorf("%w: %s compared source %s with target %s, not %s with %s; use --restart or another --dir",
					ErrOtherPair, path, had.Source, had.Target, pair.Source, pair.Target)
			}
			return nil
		}
		return putJSON(meta, keyPair, pair)
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &state{db: db}, nil
}

func (s *state) close() {
	if s != nil {
		_ = s.db.Close()
	}
}

// plan returns the stored plan of a table.
func (s *state) plan(table string) (tablePlan, bool, error) {
	var p tablePlan
	var ok bool
	if s == nil {
		return p, false, nil
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketTables).Get([]byte(table))
		if v == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(v, &p)
	})
	return p, ok, err
}

// putPlan stores a table's plan and forgets the results of its ranges
// under any earlier plan.
func (s *state) putPlan(table string, p tablePlan) error {
	if s == nil {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRanges).Cursor()
		prefix := rangePrefix(table)
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Seek(prefix) {
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return putJSON(tx.Bucket(bucketTables), []byte(table), p)
	})
}

// results returns the stored results of a table's ranges, by index.
func (s *state) results(table string) (map[int]rangeResult, error) {
	out := map[int]rangeResult{}
	if s == nil {
		return out, nil
	}
	prefix := rangePrefix(table)
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRanges).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var r rangeResult
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			out[int(binary.BigEndian.Uint32(k[len(prefix):]))] = r
		}
		return nil
	})
	return out, err
}

// putResult stores one range's result. Concurrent calls share one commit.
func (s *state) putResult(table string, i int, r rangeResult) error {
	if s == nil {
		return nil
	}
	return s.db.Batch(func(tx *bolt.Tx) error {
		return putJSON(tx.Bucket(bucketRanges), rangeKey(table, i), r)
	})
}

// keptResult is one range's result for putResults.
type keptResult struct {
	table string
	i     int
	res   rangeResult
}

// putResults stores the results of many ranges in one commit.
func (s *state) putResults(rs []keptResult) error {
	if s == nil || len(rs) == 0 {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRanges)
		for _, r := range rs {
			if err := putJSON(b, rangeKey(r.table, r.i), r.res); err != nil {
				return err
			}
		}
		return nil
	})
}

// rangePrefix is the key prefix of a table's ranges: the name and a zero
// byte, which no display name contains, so one table's prefix is never
// another's.
func rangePrefix(table string) []byte { return append([]byte(table), 0) }

func rangeKey(table string, i int) []byte {
	return binary.BigEndian.AppendUint32(rangePrefix(table), uint32(i))
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}
