pub fn x(){}
pub mod transport;
