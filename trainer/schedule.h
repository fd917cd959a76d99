// Learning-rate schedule: linear warmup, then cosine or linear decay to min_lr_ratio·lr, or
// constant; the values of transformers' get_{cosine,linear}_schedule_with_warmup (min 0).
#pragma once

#include <cstdint>

#include "common/config.h"

namespace spartan::trainer {

struct Schedule {
  double peak_lr = 0;
  int64_t total_steps = 0;
  int64_t warmup_steps = 0;
  LrScheduleKind kind = LrScheduleKind::cosine;
  double min_lr_ratio = 0.0;

  // ceil(warmup_ratio · total_steps) warmup steps, as the HF Trainer.
  static Schedule make(double peak_lr, int64_t total_steps, double warmup_ratio,
                       LrScheduleKind kind, double min_lr_ratio);
  // The learning rate of optimizer step `step` (0-based).
  double lr(int64_t step) const;
};

}  // namespace spartan::trainer
