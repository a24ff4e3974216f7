"""Part completion: each selected part's complete views (also what other parts hid), at the
object's cameras; PartGen's contextual completion, text-guided editing, a training-free variant
on Zero123++, and the no-completion baseline."""
