//! Reusable numbered slots with a generation each: what the relays' epoll tokens name. A
//! token carries the slot and its generation, so an event for an item closed earlier in the
//! same wake-up is not taken for the next item in that slot.

use crate::tokens::GEN_MASK;

#[derive(Debug)]
pub struct Slots<T> {
    items: Vec<Option<T>>,
    gens: Vec<u32>,
    free: Vec<usize>,
    /// Slots at most (token room for the index).
    max: usize,
}

impl<T> Slots<T> {
    pub fn new(max: usize) -> Slots<T> {
        Slots {
            items: Vec::new(),
            gens: Vec::new(),
            free: Vec::new(),
            max,
        }
    }

    /// Puts `item` in a free slot; its index and generation, or the item back when all are
    /// taken.
    pub fn insert(&mut self, item: T) -> Result<(usize, u32), T> {
        let index = match self.free.pop() {
            Some(i) => i,
            None if self.items.len() < self.max => {
                self.items.push(None);
                self.gens.push(0);
                self.items.len() - 1
            }
            None => return Err(item),
        };
        let gen = (self.gens[index] + 1) & GEN_MASK;
        self.gens[index] = gen;
        self.items[index] = Some(item);
        Ok((index, gen))
    }

    /// The item in `index` if it is of generation `gen`.
    pub fn get(&self, index: usize, gen: u32) -> Option<&T> {
        if self.gens.get(index) != Some(&gen) {
            return None;
        }
        self.items.get(index)?.as_ref()
    }

    /// The item in `index` if it is of generation `gen`.
    pub fn get_mut(&mut self, index: usize, gen: u32) -> Option<&mut T> {
        if self.gens.get(index) != Some(&gen) {
            return None;
        }
        self.items.get_mut(index)?.as_mut()
    }

    /// The generation of slot `index`: its item's, while it holds one.
    pub fn gen(&self, index: usize) -> Option<u32> {
        self.gens.get(index).copied()
    }

    /// The item in `index`, whatever its generation.
    pub fn at(&self, index: usize) -> Option<&T> {
        self.items.get(index)?.as_ref()
    }

    pub fn at_mut(&mut self, index: usize) -> Option<&mut T> {
        self.items.get_mut(index)?.as_mut()
    }

    /// Takes the item out of `index` and frees the slot.
    pub fn remove(&mut self, index: usize) -> Option<T> {
        let item = self.items.get_mut(index)?.take()?;
        self.free.push(index);
        Some(item)
    }

    /// The items, with their slots.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)> + '_ {
        self.items
            .iter()
            .enumerate()
            .filter_map(|(i, t)| Some((i, t.as_ref()?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reused_slots_get_a_new_generation_and_old_tokens_miss() {
        let mut s = Slots::new(2);
        let (a, ga) = s.insert("a").unwrap();
        let (b, _) = s.insert("b").unwrap();
        assert_ne!(a, b);
        assert_eq!(s.insert("c"), Err("c"), "full");
        assert_eq!(s.remove(a), Some("a"));
        let (c, gc) = s.insert("c").unwrap();
        assert_eq!(c, a, "slot reused");
        assert_ne!(gc, ga);
        assert_eq!(s.get_mut(a, ga), None, "a stale token misses");
        assert_eq!(s.get_mut(c, gc), Some(&mut "c"));
        assert_eq!(
            (s.get(c, gc), s.get(c, ga), s.gen(c)),
            (Some(&"c"), None, Some(gc))
        );
        assert_eq!(s.iter().map(|(_, t)| *t).collect::<Vec<_>>(), ["c", "b"]);
        assert_eq!(s.remove(a), Some("c"));
        assert_eq!(s.remove(a), None);
    }
}
