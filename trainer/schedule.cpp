#include "trainer/schedule.h"

#include <algorithm>
#include <cmath>

namespace spartan::trainer {

Schedule Schedule::make(double peak_lr, int64_t total_steps, double warmup_ratio,
                        LrScheduleKind kind, double min_lr_ratio) {
  Schedule s;
  s.peak_lr = peak_lr;
  s.total_steps = total_steps;
  s.warmup_steps = static_cast<int64_t>(std::ceil(warmup_ratio * static_cast<double>(total_steps)));
  s.kind = kind;
  s.min_lr_ratio = min_lr_ratio;
  return s;
}

double Schedule::lr(int64_t step) const {
  if (step < warmup_steps)
    return peak_lr * static_cast<double>(step) /
           static_cast<double>(std::max<int64_t>(1, warmup_steps));
  if (kind == LrScheduleKind::constant) return peak_lr;
  const double progress = static_cast<double>(step - warmup_steps) /
                          static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
  double factor = 0.0;
  if (kind == LrScheduleKind::cosine)
    factor = std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
  else  // linear
    factor = std::max(0.0, 1.0 - progress);
  return peak_lr * (min_lr_ratio + (1.0 - min_lr_ratio) * factor);
}

}  // namespace spartan::trainer
