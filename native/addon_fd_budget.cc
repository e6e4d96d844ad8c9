// The FdBudget class: native/fd_budget.h seen from JS.
#include "addon.h"

#include <memory>
#include <utility>

#include "fd_budget.h"

namespace fdbridge {

// FdBudget: new FdBudget(limit, parent?) counts the fds that frame channels
// charged to it hold in their ledgers (channel.chargeTo(budget)), against
// `limit` and every parent's limit (see fd_budget.h). `held` and `limit`
// (settable) are readable; it lives while a socket or a child budget uses it.

// Tags FdBudget objects so that chargeTo never unwraps something else.
const napi_type_tag kFdBudgetTag = {0x6664627564676574ULL, 0x66646272696467ULL};

class FdBudgetWrap : public Napi::ObjectWrap<FdBudgetWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "FdBudget",
                       {InstanceAccessor<&FdBudgetWrap::GetHeld>("held"),
                        InstanceAccessor<&FdBudgetWrap::GetLimit, &FdBudgetWrap::SetLimit>("limit")});
  }

  explicit FdBudgetWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FdBudgetWrap>(info) {
    Napi::Env env = info.Env();
    size_t limit = ArgLimit(env, info.Length() > 0 ? info[0] : env.Undefined());
    std::shared_ptr<FdBudget> parent;
    if (info.Length() > 1 && !info[1].IsUndefined()) {
      parent = From(env, info[1]);
      if (!parent) throw Napi::TypeError::New(env, "FdBudget(limit, parent?): parent must be an FdBudget");
    }
    budget_ = std::make_shared<FdBudget>(limit, std::move(parent));
    info.This().As<Napi::Object>().TypeTag(&kFdBudgetTag);
  }

  // The budget behind a JS FdBudget, or null for anything else.
  static std::shared_ptr<FdBudget> From(Napi::Env env, Napi::Value v) {
    if (!v.IsObject() || !v.As<Napi::Object>().CheckTypeTag(&kFdBudgetTag)) return nullptr;
    return Unwrap(v.As<Napi::Object>())->budget_;
  }

 private:
  static size_t ArgLimit(Napi::Env env, Napi::Value v) {
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= 0 && d <= 9007199254740991.0 && d == floor(d))) {
      throw Napi::RangeError::New(env, "FdBudget: limit must be a non-negative integer");
    }
    return static_cast<size_t>(d);
  }
  Napi::Value GetHeld(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(budget_->held())); }
  Napi::Value GetLimit(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(budget_->limit())); }
  void SetLimit(const Napi::CallbackInfo& info, const Napi::Value& v) { budget_->set_limit(ArgLimit(info.Env(), v)); }

  std::shared_ptr<FdBudget> budget_;
};

std::shared_ptr<FdBudget> FdBudgetOf(Napi::Env env, Napi::Value v) { return FdBudgetWrap::From(env, v); }

void ExportFdBudget(Napi::Env env, Napi::Object exports) {
  exports.Set("FdBudget", FdBudgetWrap::Define(env));
}

}  // namespace fdbridge
