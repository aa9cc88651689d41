"""HW4: image classification (the Simpsons), transfer learning, car models and architecture studies."""
