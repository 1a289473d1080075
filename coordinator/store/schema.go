// Package store keeps the coordinator's durable state in one bbolt file,
// DIR/pgcaravan.db: the migration's identity and phase, the plan, every
// unit's state, the workers seen and the snapshot epochs. A coordinator
// restarted on the same file resumes from it, and `pgcaravan status --dir`
// reads it after the coordinator is gone. Every bucket and key name lives in
// this file. The store knows nothing of gRPC or PostgreSQL.
package store

// The bucket tree:
//
//	pgcaravan.db
//	├── meta
//	│   ├── schema_version   -> "1"
//	│   ├── migration        -> JSON Meta
//	│   └── pending_cdc      -> JSON PendingCDC (while a --follow setup runs)
//	├── tables               -> big-endian uint32 source OID -> JSON plan.Table
//	├── units                -> big-endian uint64 unit ID    -> JSON Unit
//	├── workers              -> worker ID                    -> JSON Worker
//	└── epochs               -> big-endian uint32 epoch ID   -> JSON Epoch
var (
	bucketMeta    = []byte("meta")
	bucketTables  = []byte("tables")
	bucketUnits   = []byte("units")
	bucketWorkers = []byte("workers")
	bucketEpochs  = []byte("epochs")

	keySchemaVersion = []byte("schema_version")
	keyMigration     = []byte("migration")
	keyPendingCDC    = []byte("pending_cdc")

	allBuckets = [][]byte{bucketMeta, bucketTables, bucketUnits, bucketWorkers, bucketEpochs}
)

// SchemaVersion is the layout version this code reads and writes. A file
// with another version is refused rather than misread.
const SchemaVersion = "1"

// FileName is the store's file name inside --dir.
const FileName = "pgcaravan.db"
