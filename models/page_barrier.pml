/* SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * page_barrier.pml: a Spin model of the write-intent protocol of one bitmap page: two
 * writers, the cleaning daemon, the percpu_ref under the page barrier (kill, grace
 * period, fold to atomic mode, zero, resurrect) and the wait queue. It proves, for every interleaving (sequential consistency):
 *
 *   S1  a chunk with a data write issued and not yet ended is never durably Clean
 *       (monitor s1_monitor); and S2: when a write is issued its chunk is durably Dirty
 *       (assertion in the writer);
 *   S6  suspend reports "drained" only when no writer holds the page, and the atomic
 *       count never goes below zero (assertions);
 *   L1  a writer asleep on the page's wait queue is always woken again (LTL `wake`,
 *       under weak fairness);
 *   L2  a suspend always ends, drained or timed out (LTL `suspend_ends`);
 *   and the system as a whole never stops making progress (non-progress cycles).
 *
 * Variants (cpp macros), each of which must be REJECTED by Spin:
 *   -DMARK_BEFORE_RAISE    start_write marks Dirty before raising the barrier, the order
 *                          upstream shipped before ef4ca3d4bf09: S1/S2 fail;
 *   -DNO_WAKE_ON_TIMEOUT   a timed-out suspend resurrects the ref but does not wake the
 *                          writers that queued meanwhile (upstream after d119bd2e1643):
 *                          L1 fails;
 *   -DNO_GRACE_PERIOD      the switch to atomic mode folds the per-thread counters without
 *                          waiting for a grace period: S6 (and then S1) fail, which shows
 *                          that the model's tryget_live/kill race is real.
 *
 * models/README.md maps every part to the C++ code. scripts/spin.sh runs all of it.
 */

#define CLEAN  0   /* Unwritten or Clean: a resync may skip the chunk */
#define DIRTY  1   /* Dirty (NeedSync behaves the same here: never cleaned) */
#define BIAS   8   /* PERCPU_COUNT_BIAS, scaled down: more than all puts before the fold */
#define NW     2   /* writers */

/* ---- the bitmap: two chunks of one page, in memory and on stable storage */
byte mem[2];       /* state bytes in memory (Bitmap::image_) */
byte durable[2];   /* what the bitmap file holds after its last sync */
byte issued[2];    /* data writes issued and not ended, per chunk */

/* ---- the page barrier: PercpuRef active_ + WaitQueue wait_ + expire_ */
bool dead;           /* kDead in PercpuRef::mode_ */
bool atomic_mode;    /* kAtomic in PercpuRef::mode_ */
byte count = 1 + BIAS;  /* PercpuRef::count_: the initial ref plus the bias (percpu mode) */
short pcpu;          /* sum of the per-thread counters (PercpuRegistry slots) */
bool switch_pending; /* PercpuRef::switch_pending_ */
bool queued;         /* the ref is on the SwitchWorker's queue */
bool in_rcu[NW];     /* writer i is inside a liburcu read-side section */
bool gp_wait[NW];    /* the current grace period waits for writer i's section */
bool expired;        /* PageBarrier::expired(now): no raise for barrier_idle */

bool asleep[NW];     /* writer i sleeps in WaitQueue::wait (raise_slow) */
bool dsleep;         /* the daemon sleeps in WaitQueue::wait_for (finish_suspend) */

/* ---- ghost state, for the properties only */
byte holders;        /* writers that got the ref and have not put it */
bool suspending;     /* the daemon is between kill and the end of its wait */

/* WaitQueue::wake_up(): wakes every sleeper. The queue's own no-lost-wake-up argument
 * (an announce RMW before the last check, paired with the waker's RMW) is modelled by
 * making "check the predicate, then sleep" one atomic step in the waiters. */
inline wake_up() {
  atomic { asleep[0] = false; asleep[1] = false; dsleep = false }
}

/* PercpuRef::put_atomic: the last put calls release, which is active_release: wake. */
inline put_atomic() {
  atomic {
    assert(count > 0);   /* S6: never below zero */
    count--;
    if
    :: count == 0 -> wake_up()
    :: else
    fi
  }
}

/* PercpuRef::tryget_live (fast and slow path), in a liburcu read-side section: read the
 * mode; percpu mode: add to this thread's counter, a separate plain store that only the
 * grace period orders before the fold (the section ends with it); dying: fail; atomic
 * and alive: add_unless_zero on the atomic count. Entering the section and reading the
 * mode are one step: a grace period that starts after them waits for the section, one
 * that started before them was started by a kill whose atomic mode they see. */
inline tryget_live(i, ok) {
  if
  :: atomic { !dead && !atomic_mode -> in_rcu[i] = true; holders++ };
     atomic { pcpu++; in_rcu[i] = false; gp_wait[i] = false };
     ok = true
  :: atomic { dead -> ok = false }
  :: atomic { !dead && atomic_mode ->
       if
       :: count > 0 -> count++; holders++; ok = true
       :: else -> ok = false
       fi }
  fi
}

/* PageBarrier::release -> PercpuRef::put: percpu mode: the thread's counter, inside a
 * read-side section; otherwise (dying or atomic) the atomic count. */
inline put(i) {
  if
  :: atomic { !dead && !atomic_mode -> in_rcu[i] = true; holders-- };
     atomic { pcpu--; in_rcu[i] = false; gp_wait[i] = false }
  :: atomic { dead || atomic_mode -> holders--; put_atomic() }
  fi
}

/* PageBarrier::raise: tryget_live; on failure wait until the ref is not dying, retry.
 * Success notes the page as used (expire = now + barrier_idle). */
inline raise(i) {
  do
  :: tryget_live(i, ok);
     if
     :: ok -> expired = false; break
     :: else ->
        do
        :: atomic { !dead -> break }
        :: atomic { dead -> asleep[i] = true };
           !asleep[i]   /* woken by wake_up(): check again */
        od
     fi
  od;
  ok = false
}

/* The bitmap write path persists the whole block (both chunks) and syncs; rounds are
 * serialised, so a persist is one atomic copy (Bitmap::persist_targets/persist_round). */
inline persist() {
  atomic { durable[0] = mem[0]; durable[1] = mem[1] }
}

/* Bitmap::start_write .. end_write, forever, on a chunk chosen each time. */
proctype writer(byte i) {
  byte c;
  bool ok;
  do
  :: if
     :: c = 0
     :: c = 1
     fi;
#ifdef MARK_BEFORE_RAISE
     mem[c] = DIRTY;          /* Startwrite */
     raise(i);
#else
     raise(i);                /* raise_pages */
     mem[c] = DIRTY;          /* mark_and_persist: Startwrite */
#endif
     persist();               /* ... and persist: Dirty is durable on return */
     atomic {                 /* the engine issues the data write */
       assert(durable[c] == DIRTY);   /* S2 */
       issued[c]++
     };
progress_write:
     issued[c]--;             /* the data write is durable: end_write */
     put(i);                  /* release_pages */
     c = 0
  od
}

/* Time passes: with no raise for barrier_idle the page expires. Nothing forces it:
 * writers that keep raising keep the page young. */
active proctype clock() {
end_clock:
  do
  :: atomic { !expired -> expired = true }
  od
}

/* SwitchWorker::run/process: after a grace period, fold the per-thread counters into
 * the atomic count (PercpuRef::fold_percpu_counts), end the switch, put the reference
 * held across it (which may be the last one: release wakes the queue). */
active proctype switch_worker() {
end_worker:
  do
  :: atomic { queued -> queued = false };
#ifndef NO_GRACE_PERIOD
     /* synchronize_rcu: wait for every read-side section that began before it */
     atomic { gp_wait[0] = in_rcu[0]; gp_wait[1] = in_rcu[1] };
     !gp_wait[0] && !gp_wait[1];
#endif
     atomic {
       count = count + pcpu - BIAS;
       assert(count > 0)      /* the switch's own reference is still held */
     };
     switch_pending = false;
     put_atomic()
  od
}

/* The daemon pass over this page (Bitmap::daemon_pass with PageBarrier::suspend_many,
 * finish_suspend and resume). */
active proctype daemon() {
  bool timed_out;
end_daemon:
  do
  :: atomic { expired && (mem[0] == DIRTY || mem[1] == DIRTY) -> suspending = true };
     /* PercpuRef::kill: dying at once, then atomic mode with the switch queued ... */
     dead = true;
     atomic {
       !switch_pending;
       atomic_mode = true; switch_pending = true; count++; queued = true
     };
     put_atomic();            /* ... and the initial reference dropped */

     /* finish_suspend: wait_for(is_zero, daemon_sleep) */
     do
     :: atomic { atomic_mode && count == 0 -> break }
     :: atomic { !(atomic_mode && count == 0) -> dsleep = true };
        if
        :: !dsleep            /* woken: check again */
        :: atomic { !(atomic_mode && count == 0) && holders > 0 ->
                      dsleep = false; timed_out = true };
           break              /* daemon_sleep ran out with a write still holding the page */
        fi
     od;
     suspending = false;
     if
     :: timed_out ->
        /* resurrect (upstream d119bd2e1643) and wake the writers queued meanwhile */
        atomic { dead = false; count++ };
        !switch_pending;
        atomic { count = count + BIAS; pcpu = 0; atomic_mode = false };
#ifndef NO_WAKE_ON_TIMEOUT
        wake_up();
#endif
        timed_out = false
     :: else ->
        assert(holders == 0); /* S6: drained means nobody holds the page */
        /* Daemon action: Dirty -> Clean, persisted while the page is still suspended */
        atomic {
          if :: mem[0] == DIRTY -> mem[0] = CLEAN :: else fi;
          if :: mem[1] == DIRTY -> mem[1] = CLEAN :: else fi
        };
        persist();
progress_clean:
        /* resume: expire = never, resurrect, wake */
        expired = false;
        atomic { dead = false; count++ };
        !switch_pending;
        atomic { count = count + BIAS; pcpu = 0; atomic_mode = false };
        wake_up()
     fi
  od
}

/* S1: never a data write in flight over a durably Clean chunk. */
active proctype s1_monitor() {
end_s1:
  atomic {
    (issued[0] > 0 && durable[0] == CLEAN) || (issued[1] > 0 && durable[1] == CLEAN) ->
      assert(false)
  }
}

init {
  atomic {
    run writer(0);
    run writer(1)
  }
}

/* L1: every writer asleep on the queue is woken again. */
ltl wake { [] ((asleep[0] -> <> !asleep[0]) && (asleep[1] -> <> !asleep[1])) }
/* L2: every suspend ends, drained or timed out. */
ltl suspend_ends { [] (suspending -> <> !suspending) }
