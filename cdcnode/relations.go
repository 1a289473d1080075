package cdcnode

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/jackc/pglogrepl"
)

// Relation messages are kept in DIR/relations.json: the spool drops
// applied segments, and pgoutput sends a relation's description only once
// per session.
func (n *Node) relationsFile() string { return filepath.Join(n.cfg.Dir, "relations.json") }

func (n *Node) loadRelations() error {
	data, err := os.ReadFile(n.relationsFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cdcnode: %w", err)
	}
	n.relationsMu.Lock()
	defer n.relationsMu.Unlock()
	if err := json.Unmarshal(data, &n.relations); err != nil {
		return fmt.Errorf("cdcnode: %s: %w", n.relationsFile(), err)
	}
	return nil
}

func (n *Node) saveRelation(payload []byte) {
	var m pglogrepl.RelationMessage
	if err := m.Decode(payload[1:]); err != nil {
		return
	}
	n.relationsMu.Lock()
	defer n.relationsMu.Unlock()
	n.relations[m.RelationID] = payload
	data, err := json.Marshal(n.relations)
	if err != nil {
		return
	}
	tmp := n.relationsFile() + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err == nil {
		_ = os.Rename(tmp, n.relationsFile())
	}
}

func (n *Node) relation(id uint32) *pglogrepl.RelationMessage {
	n.relationsMu.Lock()
	defer n.relationsMu.Unlock()
	raw, ok := n.relations[id]
	if !ok {
		return nil
	}
	var m pglogrepl.RelationMessage
	if err := m.Decode(raw[1:]); err != nil {
		return nil
	}
	return &m
}
