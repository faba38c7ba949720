#include "sched/policy.h"

static bool aggressive_admit(void *ctx, const sp_sched_state *s, const sp_policy_req *cand) {
    (void)ctx;
    return cand->blocks_needed <= s->n_available;
}

sp_admission_policy sp_policy_aggressive(void) {
    return (sp_admission_policy){.name = "aggressive", .admit = aggressive_admit};
}
