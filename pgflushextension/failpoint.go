package pgflushextension

// Failpoint steps: the points of the flush path where the fault-injection
// tests (fault_test.go) make a flusher SIGKILL its own process, to check that
// recovery neither loses nor double-counts anything whichever step a crash
// interrupts. In production flusher.failpoint is nil and reaching a step does
// nothing.
const (
	// stepBeforeStage: the flush id is in the own set; STAGE has not run.
	stepBeforeStage = "before_stage"
	// stepAfterStage: STAGE moved a non-empty batch; its counts are only in
	// the staging hash.
	stepAfterStage = "after_stage"
	// stepApplyBegun: inside the APPLY transaction, right after BEGIN.
	stepApplyBegun = "apply_begun"
	// stepAfterLedger: the ledger row is inserted (or found), not committed.
	stepAfterLedger = "after_ledger"
	// stepBeforeCommit: the upserts are done; COMMIT is not sent.
	stepBeforeCommit = "before_commit"
	// stepAfterCommit: committed; the counts are in PostgreSQL and still in
	// the staging hash.
	stepAfterCommit = "after_commit_before_cleanup"
	// stepAfterCleanup: CLEANUP deleted the staging entry.
	stepAfterCleanup = "after_cleanup"
	// stepRecoveryRead: recovery read a left-over staging entry and has not
	// applied it.
	stepRecoveryRead = "recovery_read"
)

// failpointFunc is called with each step reached; a nil one does nothing.
type failpointFunc func(step string)

func (fp failpointFunc) reach(step string) {
	if fp != nil {
		fp(step)
	}
}

// reach calls the flusher's failpoint, if any, with step.
func (f *flusher) reach(step string) { f.failpoint.reach(step) }
