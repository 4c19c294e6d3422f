/** The admin check shared by management routes. */
import { AppError } from "../../shared/errors.ts";

/** @throws AppError 403 for a valid non-admin key. */
export function requireAdmin(isAdmin: boolean): void {
  if (!isAdmin) {
    throw new AppError(
      "permission",
      "This route needs an admin API key (ADMIN_API_KEYS).",
      null,
      "insufficient_permissions",
    );
  }
}
